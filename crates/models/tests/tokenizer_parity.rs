//! The tokenizer against the Python `tokenizers` / transformers fast tokenizer on a tiny Unigram
//! `tokenizer.json` with umT5's layout (fixtures from scripts/fixtures/gen_vae_umt5.py), with Wan's cleaning.

use std::path::PathBuf;
use wanlora_models::tokenizer::{clean_prompt, unescape_html, Tokenizer};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

struct Cases {
    prompts: Vec<String>,
    cleaned: Vec<String>,
    input_ids: Vec<Vec<i64>>,
    attention_mask: Vec<Vec<i64>>,
}

fn cases() -> Cases {
    let text = std::fs::read_to_string(fixtures().join("cases.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let strings = |key: &str| -> Vec<String> {
        json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let rows = |key: &str| -> Vec<Vec<i64>> {
        json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap())
                    .collect()
            })
            .collect()
    };
    Cases {
        prompts: strings("prompts"),
        cleaned: strings("cleaned"),
        input_ids: rows("input_ids"),
        attention_mask: rows("attention_mask"),
    }
}

#[test]
fn ids_and_mask_match_the_python_tokenizer() {
    let tokenizer = Tokenizer::from_file(&fixtures().join("tokenizer.json")).unwrap();
    let cases = cases();
    let prompts: Vec<&str> = cases.prompts.iter().map(String::as_str).collect();
    let (ids, mask) = tokenizer.encode_batch(&prompts).unwrap();
    assert_eq!(ids.size(), [prompts.len() as i64, 512]);
    for (row, prompt) in prompts.iter().enumerate() {
        let got: Vec<i64> = Vec::try_from(ids.get(row as i64)).unwrap();
        assert_eq!(got, cases.input_ids[row], "ids of {prompt:?}");
        let got: Vec<i64> = Vec::try_from(mask.get(row as i64)).unwrap();
        assert_eq!(got, cases.attention_mask[row], "mask of {prompt:?}");
    }
}

#[test]
fn cleaning_matches_wans_python_cleaning() {
    let cases = cases();
    for (raw, cleaned) in cases.prompts.iter().zip(&cases.cleaned) {
        assert_eq!(&clean_prompt(raw), cleaned, "{raw:?}");
    }
}

#[test]
fn html_references_decode_like_python() {
    // Expected values follow the HTML specification (and Python's html.unescape).
    assert_eq!(
        unescape_html("&lt;b&gt; &amp; &quot;x&quot;"),
        "<b> & \"x\""
    );
    assert_eq!(unescape_html("&#39;&#x27;&#X41;&#65"), "''AA");
    assert_eq!(unescape_html("&unknown; & alone"), "&unknown; & alone");
    assert_eq!(unescape_html("&amp;amp; &ampz"), "&amp; &z");
    assert_eq!(unescape_html("&#0; &#x110000;"), "\u{fffd} \u{fffd}");
    assert_eq!(unescape_html("&nbsp;&mdash;&hellip;"), "\u{a0}—…");
    assert_eq!(
        clean_prompt("a&amp;nbsp;b"),
        "a b",
        "twice unescaped, NBSP collapsed"
    );
}

#[test]
fn truncation_keeps_eos_last() {
    let tokenizer = Tokenizer::from_file(&fixtures())
        .unwrap()
        .with_max_length(8)
        .unwrap();
    let cases = cases();
    let long = cases.prompts.last().unwrap();
    let ids = tokenizer.encode_ids(long).unwrap();
    assert_eq!(ids.len(), 8);
    assert_eq!(
        ids[..7],
        cases.input_ids.last().unwrap()[..7],
        "same pieces as the 512-token encoding"
    );
    assert_eq!(ids[7], 1, "EOS (</s> = 1) is kept at the end");
    let (ids, mask) = tokenizer.encode_batch(&["", "the cat"]).unwrap();
    assert_eq!(ids.size(), [2, 8]);
    assert_eq!(
        Vec::<i64>::try_from(mask.get(0)).unwrap(),
        [1, 0, 0, 0, 0, 0, 0, 0],
        "an empty prompt is EOS alone"
    );
}

#[test]
fn missing_tokenizer_says_where_to_look() {
    let err = Tokenizer::from_file(&fixtures().join("nothing-here"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    let err = Tokenizer::from_file(&fixtures().join("cases.json"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cases.json"), "{err}");
}
