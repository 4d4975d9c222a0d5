//! Closed sets of values (optimizer, scheduler, …): how each is spelled, and which values AI Toolkit
//! knows but wanlora refuses, with the reason.

/// A closed set of values read from text.
pub(crate) trait Choice: Copy + PartialEq + Sized + 'static {
    /// Every accepted spelling with the variant it means; the first spelling of a variant is its name
    /// (and what serde writes).
    const SPELLINGS: &'static [(&'static str, Self)];
    /// Values that exist in AI Toolkit (or are commonly written) but that wanlora does not implement,
    /// each with the reason shown to the user.
    const REFUSED: &'static [(&'static str, &'static str)] = &[];
    /// Whether `AdamW8bit` means `adamw8bit` (AI Toolkit lower-cases some of these itself).
    const IGNORE_CASE: bool = false;

    /// The canonical spelling.
    fn name(self) -> &'static str {
        Self::SPELLINGS
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("?", |(s, _)| s)
    }

    /// The canonical spellings, one per variant, in order.
    fn names() -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        let mut seen: Vec<Self> = Vec::new();
        for (spelling, value) in Self::SPELLINGS {
            if !seen.contains(value) {
                seen.push(*value);
                names.push(spelling);
            }
        }
        names
    }

    fn parse(text: &str) -> Result<Self, Rejected> {
        let matches = |a: &str| {
            if Self::IGNORE_CASE {
                a.eq_ignore_ascii_case(text.trim())
            } else {
                a == text.trim()
            }
        };
        if let Some((_, value)) = Self::SPELLINGS.iter().find(|(s, _)| matches(s)) {
            return Ok(*value);
        }
        if let Some((_, reason)) = Self::REFUSED.iter().find(|(s, _)| matches(s)) {
            return Err(Rejected::Refused(reason));
        }
        let spellings = Self::SPELLINGS.iter().map(|(s, _)| *s);
        Err(Rejected::Unknown(crate::suggest::nearest(text, spellings)))
    }
}

/// Why a text is not a value of the set.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rejected {
    /// Known, but not implemented in wanlora (the reason).
    Refused(&'static str),
    /// Not a value at all (maybe a typo of this one).
    Unknown(Option<&'static str>),
}

/// Implements serde for a [`Choice`] through its canonical spelling, so that YAML, JSON and the
/// validator agree on one set of names (aliases are accepted when reading).
macro_rules! choice_serde {
    ($ty:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($crate::choice::Choice::name(*self))
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(d)?;
                <$ty as $crate::choice::Choice>::parse(&text).map_err(|_| {
                    serde::de::Error::custom(format!(
                        "`{text}` is not one of: {}",
                        <$ty as $crate::choice::Choice>::names().join(", ")
                    ))
                })
            }
        }
    };
}
pub(crate) use choice_serde;
