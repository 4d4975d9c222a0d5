//! `train.gpus` (wanlora) and `wanlora train --gpus`: which GPUs a job runs on. Two GPUs with both
//! experts trained run the experts side by side (expert-parallel); several GPUs for one expert
//! train it data-parallel; an even number above two with both experts does both: the first half
//! of the list trains the high-noise expert data-parallel, the second half the low-noise one.

use crate::reader::Ctx;
use crate::Job;

/// A GPU list from the command line: `0,1` (indices from 0, comma-separated).
pub fn parse_gpu_list(text: &str) -> Result<Vec<u32>, String> {
    let gpus: Vec<u32> = text
        .split(',')
        .map(|g| {
            g.trim().parse::<u32>().map_err(|_| {
                format!(
                    "--gpus {text:?}: {:?} is not a GPU index; write indices from 0, such as 0,1",
                    g.trim()
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(gpus)
}

/// Why `gpus` cannot run a job that trains `trained` experts (1 or 2), with what to do; `None`
/// when it can.
pub fn gpu_list_problem(gpus: &[u32], trained: usize) -> Option<(String, String)> {
    match (gpus.len(), trained) {
        (0..=2, _) | (_, 1) => None,
        (n, _) if n.is_multiple_of(2) => None,
        (n, _) => Some((
            format!(
                "{gpus:?}: {n} GPUs for two experts; each expert trains on half of the list, so it needs an \
                 even number"
            ),
            "list an even number of GPUs (the first half trains the high-noise expert, the second half the \
             low-noise one), or train one expert on all of them"
                .into(),
        )),
    }
}

/// The experts `job` trains (1 or 2), as the GPU lists are checked against.
pub fn trained_experts(job: &Job) -> usize {
    let kwargs = &job.process().model.model_kwargs;
    usize::from(kwargs.train_high_noise) + usize::from(kwargs.train_low_noise)
}

pub(crate) fn check_gpus(job: &Job, ctx: &mut Ctx) {
    let process = job.process();
    if let Some((message, hint)) = gpu_list_problem(&process.train.gpus, trained_experts(job)) {
        ctx.error_at(
            "config.process[0].train.gpus",
            format!("train.gpus {message}"),
            hint,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_lists_parse_or_say_what_is_wrong() {
        assert_eq!(parse_gpu_list("0,1"), Ok(vec![0, 1]));
        assert_eq!(parse_gpu_list(" 2 , 3"), Ok(vec![2, 3]));
        let err = parse_gpu_list("0,x").unwrap_err();
        assert!(err.contains("\"x\" is not a GPU index"), "{err}");
        assert!(parse_gpu_list("-1").is_err());
        assert!(parse_gpu_list("").is_err());
    }

    #[test]
    fn an_odd_number_of_gpus_for_two_experts_is_refused() {
        assert_eq!(gpu_list_problem(&[0, 1], 2), None);
        assert_eq!(gpu_list_problem(&[1], 1), None);
        assert_eq!(gpu_list_problem(&[0, 1, 2], 1), None);
        assert_eq!(gpu_list_problem(&[0, 1, 2, 3], 2), None);
        let (message, hint) = gpu_list_problem(&[0, 1, 2], 2).unwrap();
        assert!(message.contains("3 GPUs for two experts"), "{message}");
        assert!(hint.contains("even number"), "{hint}");
    }
}
