//! libtorch's gloo process group through the helper: two ranks (threads of this test, talking over
//! TCP through the TCPStore and gloo as separate processes would) average a tensor and meet at a
//! barrier; a rank that cannot reach the store, and a rank outside the world, are named errors.

use std::time::Duration;
use tch::{Kind, Tensor};
use wanlora_torch::dist::{DistError, GlooGroup};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn two_ranks_average_a_flat_tensor_and_meet_at_a_barrier() {
    let port = free_port();
    let ranks: Vec<_> = (0..2u32)
        .map(|rank| {
            std::thread::spawn(move || {
                let group =
                    GlooGroup::join("127.0.0.1", port, rank, 2, Duration::from_secs(30)).unwrap();
                assert_eq!((group.rank(), group.world()), (rank, 2));
                let values =
                    Tensor::arange(6, (Kind::Float, tch::Device::Cpu)) * f64::from(rank + 1);
                group.all_reduce_mean(&values).unwrap();
                group.barrier().unwrap();
                Vec::<f32>::try_from(&values).unwrap()
            })
        })
        .collect();
    let results: Vec<Vec<f32>> = ranks.into_iter().map(|h| h.join().unwrap()).collect();
    let expected: Vec<f32> = (0..6).map(|i| i as f32 * 1.5).collect();
    assert_eq!(results[0], expected);
    assert_eq!(results[1], expected);
}

#[test]
fn a_rank_that_cannot_reach_the_store_or_is_outside_the_world_is_refused() {
    assert_eq!(
        GlooGroup::join("127.0.0.1", 1, 2, 2, Duration::from_secs(1)).err(),
        Some(DistError::BadRank { rank: 2, world: 2 })
    );
    // Rank 1 with no rank 0 serving the store: an error naming where it looked, after the timeout.
    let port = free_port();
    let err = GlooGroup::join("127.0.0.1", port, 1, 2, Duration::from_secs(1))
        .err()
        .expect("no store to join");
    let message = err.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{port}")) && message.contains("MASTER_ADDR"),
        "{message}"
    );
}
