//! The umT5 tokenizer as Wan uses it: `tokenizer.json` from the model folder through the `tokenizers` crate,
//! prompts cleaned as Wan cleans them, EOS appended (no BOS), truncated to 512 tokens with the EOS kept, padded
//! with `<pad>` (id 0) to 512 positions, and an attention mask of the real tokens.
//!
//! Wan's cleaning (`wan/modules/tokenizers.py`, `clean='whitespace'`) is `ftfy.fix_text`, `html.unescape`
//! twice, strip, and collapsing every run of whitespace into one space. ftfy (a Python library that repairs
//! mojibake such as "Ã©" for "é") has no Rust counterpart and is left out: it changes nothing in well-formed
//! UTF-8 text, which is what prompts typed or stored as UTF-8 are. The HTML unescaping here decodes numeric
//! references (`&#39;`, `&#x41;`) and the common named entities (see [`unescape_html`]); rarer named entities
//! stay as written, where Python would decode them.

use crate::ModelError;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};
use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

/// Prompt length Wan's text encoder is run at.
pub const WAN_MAX_TOKENS: usize = 512;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    max_length: usize,
    pad_id: u32,
    eos_id: u32,
    /// Whether the tokenizer's post-processor appends EOS itself (umT5's does: "$A </s>").
    appends_eos: bool,
}

impl Tokenizer {
    /// Loads `tokenizer.json`: the file itself, or a folder holding it (or holding `tokenizer/tokenizer.json`,
    /// as a diffusers model folder does).
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let file = [
            path.join("tokenizer.json"),
            path.join("tokenizer").join("tokenizer.json"),
        ]
        .into_iter()
        .find(|p| path.is_dir() && p.is_file())
        .unwrap_or_else(|| path.to_path_buf());
        let fail = |reason: String| ModelError::Tokenizer(format!("{}: {reason}", file.display()));
        if !file.is_file() {
            return Err(fail(
                "no tokenizer.json here; use the model's tokenizer/ folder (google/umt5-xxl's tokenizer.json)".into(),
            ));
        }
        let inner = tokenizers::Tokenizer::from_file(&file)
            .map_err(|e| fail(format!("not a tokenizers tokenizer.json ({e})")))?;
        let id = |token: &str| inner.token_to_id(token);
        let eos_id = id("</s>").ok_or_else(|| fail("the vocabulary has no </s> token".into()))?;
        let pad_id = id("<pad>").unwrap_or(0);
        let mut tokenizer = Tokenizer {
            inner,
            path: file.clone(),
            max_length: WAN_MAX_TOKENS,
            pad_id,
            eos_id,
            appends_eos: false,
        };
        tokenizer.inner.with_padding(None);
        let empty = tokenizer
            .inner
            .encode("", true)
            .map_err(|e| fail(format!("cannot encode an empty prompt ({e})")))?;
        tokenizer.appends_eos = empty.get_ids().last() == Some(&eos_id);
        tokenizer.set_max_length(WAN_MAX_TOKENS)?;
        Ok(tokenizer)
    }

    /// Pads and truncates to `max_length` tokens (EOS included) instead of 512.
    pub fn with_max_length(mut self, max_length: usize) -> Result<Self, ModelError> {
        self.set_max_length(max_length)?;
        Ok(self)
    }

    fn set_max_length(&mut self, max_length: usize) -> Result<(), ModelError> {
        if max_length == 0 {
            return Err(ModelError::Tokenizer(
                "max_length must be at least 1 (room for EOS)".into(),
            ));
        }
        // When the post-processor adds EOS, the crate keeps room for it while truncating; otherwise EOS is
        // appended after truncating to one token less.
        let budget = if self.appends_eos {
            max_length
        } else {
            max_length - 1
        };
        self.inner
            .with_truncation(Some(TruncationParams {
                max_length: budget,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", self.path.display())))?;
        self.max_length = max_length;
        Ok(())
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Token ids of one prompt after cleaning: truncated, EOS last, unpadded.
    pub fn encode_ids(&self, prompt: &str) -> Result<Vec<i64>, ModelError> {
        let cleaned = clean_prompt(prompt);
        let encoding = self
            .inner
            .encode(cleaned.as_str(), true)
            .map_err(|e| ModelError::Tokenizer(format!("cannot tokenize {prompt:?}: {e}")))?;
        let mut ids: Vec<i64> = encoding.get_ids().iter().map(|&i| i as i64).collect();
        if !self.appends_eos {
            ids.push(self.eos_id as i64);
        }
        Ok(ids)
    }

    /// `(input_ids, attention_mask)`, both int64 `[B, max_length]` on the CPU: each prompt cleaned, tokenized,
    /// truncated with EOS kept, padded with `<pad>`; the mask is 1 on real tokens (EOS included).
    pub fn encode_batch(&self, prompts: &[&str]) -> Result<(Tensor, Tensor), ModelError> {
        let n = self.max_length;
        let mut ids = vec![self.pad_id as i64; prompts.len() * n];
        let mut mask = vec![0i64; prompts.len() * n];
        for (row, prompt) in prompts.iter().enumerate() {
            let tokens = self.encode_ids(prompt)?;
            let offset = row * n;
            ids[offset..offset + tokens.len()].copy_from_slice(&tokens);
            mask[offset..offset + tokens.len()].fill(1);
        }
        let shape = [prompts.len() as i64, n as i64];
        let as_tensor = |v: &[i64]| -> Result<Tensor, ModelError> {
            Ok(Tensor::f_from_slice(v)?
                .f_reshape(shape)?
                .f_to_kind(Kind::Int64)?)
        };
        Ok((as_tensor(&ids)?, as_tensor(&mask)?))
    }
}

/// Wan's prompt cleaning without ftfy: HTML-unescape twice, then trim and collapse whitespace runs to one space.
pub fn clean_prompt(text: &str) -> String {
    let unescaped = unescape_html(&unescape_html(text));
    let mut out = String::with_capacity(unescaped.len());
    for word in unescaped
        .split(is_python_whitespace)
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Python's `str.isspace()`: Unicode White_Space plus the ASCII separators U+001C … U+001F.
fn is_python_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Named entities decoded by [`unescape_html`] (the HTML 4 entities people type; Python knows all of HTML5's).
const ENTITIES: &[(&str, char)] = &[
    ("amp", '&'),
    ("lt", '<'),
    ("gt", '>'),
    ("quot", '"'),
    ("apos", '\''),
    ("nbsp", '\u{a0}'),
    ("copy", '©'),
    ("reg", '®'),
    ("trade", '™'),
    ("hellip", '…'),
    ("mdash", '—'),
    ("ndash", '–'),
    ("lsquo", '‘'),
    ("rsquo", '’'),
    ("sbquo", '‚'),
    ("ldquo", '“'),
    ("rdquo", '”'),
    ("bdquo", '„'),
    ("laquo", '«'),
    ("raquo", '»'),
    ("lsaquo", '‹'),
    ("rsaquo", '›'),
    ("middot", '·'),
    ("bull", '•'),
    ("deg", '°'),
    ("plusmn", '±'),
    ("times", '×'),
    ("divide", '÷'),
    ("euro", '€'),
    ("pound", '£'),
    ("yen", '¥'),
    ("cent", '¢'),
    ("sect", '§'),
    ("para", '¶'),
    ("iexcl", '¡'),
    ("iquest", '¿'),
    ("frac12", '½'),
    ("frac14", '¼'),
    ("frac34", '¾'),
    ("sup1", '¹'),
    ("sup2", '²'),
    ("sup3", '³'),
    ("micro", 'µ'),
    ("shy", '\u{ad}'),
    ("ensp", '\u{2002}'),
    ("emsp", '\u{2003}'),
    ("thinsp", '\u{2009}'),
    ("zwj", '\u{200d}'),
    ("zwnj", '\u{200c}'),
    ("prime", '′'),
    ("Prime", '″'),
    ("larr", '←'),
    ("rarr", '→'),
    ("uarr", '↑'),
    ("darr", '↓'),
    ("harr", '↔'),
    ("hearts", '♥'),
    ("infin", '∞'),
    ("ne", '≠'),
    ("le", '≤'),
    ("ge", '≥'),
    ("asymp", '≈'),
    ("minus", '−'),
    ("permil", '‰'),
    ("dagger", '†'),
    ("Dagger", '‡'),
];

/// Entities Python also decodes without the closing semicolon (HTML's legacy ones, here the common subset).
const LEGACY_WITHOUT_SEMICOLON: &[&str] = &["amp", "lt", "gt", "quot", "nbsp", "copy", "reg"];

/// Decodes HTML character references like Python's `html.unescape`: `&#NNN;` and `&#xHHH;` (semicolon optional;
/// 0, surrogates and values past U+10FFFF become U+FFFD), and the named entities of [`ENTITIES`].
pub fn unescape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        match decode_reference(&rest[1..]) {
            Some((decoded, used)) => {
                out.push(decoded);
                rest = &rest[1 + used..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The character of the reference at the start of `s` (just after '&') and how many bytes it spans.
fn decode_reference(s: &str) -> Option<(char, usize)> {
    if let Some(number) = s.strip_prefix('#') {
        let (digits, radix, skip) = match number.strip_prefix(['x', 'X']) {
            Some(hex) => (hex, 16, 2),
            None => (number, 10, 1),
        };
        let len = digits.chars().take_while(|c| c.is_digit(radix)).count();
        if len == 0 {
            return None;
        }
        let value = u32::from_str_radix(&digits[..len], radix).unwrap_or(u32::MAX);
        let decoded = match value {
            0 => '\u{fffd}',
            v => char::from_u32(v).unwrap_or('\u{fffd}'),
        };
        let semicolon = digits[len..].starts_with(';') as usize;
        return Some((decoded, skip + len + semicolon));
    }
    let len = s.chars().take_while(|c| c.is_ascii_alphanumeric()).count();
    let entity = |name: &str| ENTITIES.iter().find(|(n, _)| *n == name).map(|&(_, c)| c);
    if s[len..].starts_with(';') {
        if let Some(decoded) = entity(&s[..len]) {
            return Some((decoded, len + 1));
        }
    }
    // Without a semicolon (or unknown with one), the longest legacy entity at the start counts: "&ampz" → "&z".
    (1..=len).rev().find_map(|k| {
        let name = &s[..k];
        LEGACY_WITHOUT_SEMICOLON
            .contains(&name)
            .then(|| entity(name).map(|c| (c, k)))
            .flatten()
    })
}
