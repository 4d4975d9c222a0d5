//! A job's GPU field as a set of CUDA devices.
//!
//! The field becomes CUDA_VISIBLE_DEVICES, so "0,1" and "0" share device 0: the queue must compare
//! device sets, not strings. The field is stored normalised ("00" is "0", " 1 , 0 " is "1,0") so
//! that one device has one spelling; the order is kept because it decides which device the trainer
//! sees as cuda:0.

use std::collections::BTreeSet;

/// More indices than any machine has; keeps a typo such as "0000000000007" from looking valid.
pub const MAX_DEVICE_INDEX: u32 = 1023;

/// What a GPU field may look like, for error messages.
pub const GPU_FIELD_HINT: &str = "use CUDA device indices such as 0 or 0,1";

/// The CUDA devices of one job, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSet(Vec<u32>);

impl DeviceSet {
    /// Parses "0", "0,1", " 1 , 00 " (spaces around indices and leading zeros are allowed);
    /// refuses empty entries, non-digits, repeated devices and indices above [`MAX_DEVICE_INDEX`].
    pub fn parse(field: &str) -> Result<Self, String> {
        let mut devices = Vec::new();
        for part in field.split(',') {
            let part = part.trim_matches([' ', '\t']);
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("gpu {field:?}: {GPU_FIELD_HINT}"));
            }
            let digits = part.trim_start_matches('0');
            let index = if digits.is_empty() {
                0
            } else if digits.len() > 4 {
                u32::MAX
            } else {
                digits.parse().unwrap_or(u32::MAX)
            };
            if index > MAX_DEVICE_INDEX {
                return Err(format!(
                    "gpu {field:?}: device {part} is out of range (0 to {MAX_DEVICE_INDEX})"
                ));
            }
            if devices.contains(&index) {
                return Err(format!("gpu {field:?}: device {index} is listed twice"));
            }
            devices.push(index);
        }
        Ok(DeviceSet(devices))
    }

    /// True when the two jobs would share at least one device.
    pub fn overlaps(&self, other: &DeviceSet) -> bool {
        self.0.iter().any(|d| other.0.contains(d))
    }

    pub fn devices(&self) -> &[u32] {
        &self.0
    }
}

impl std::fmt::Display for DeviceSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// The stored spelling of a GPU field, or why it is not one.
pub fn normalize_gpu(field: &str) -> Result<String, String> {
    DeviceSet::parse(field).map(|set| set.to_string())
}

/// Devices held by jobs that run or are about to; a field that does not parse (only possible in a
/// database written by hand) holds every device, so it never runs beside anything.
#[derive(Debug, Default)]
pub struct Reservations {
    devices: BTreeSet<u32>,
    everything: bool,
}

impl Reservations {
    pub fn hold(&mut self, field: &str) {
        match DeviceSet::parse(field) {
            Ok(set) => self.devices.extend(set.0),
            Err(_) => self.everything = true,
        }
    }

    /// True when none of `field`'s devices is held.
    pub fn is_free(&self, field: &str) -> bool {
        match DeviceSet::parse(field) {
            Ok(set) => !self.everything && set.0.iter().all(|d| !self.devices.contains(d)),
            Err(_) => !self.everything && self.devices.is_empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_device_normalise_to_one_field() {
        assert_eq!(normalize_gpu("0").unwrap(), "0");
        assert_eq!(normalize_gpu("00").unwrap(), "0");
        assert_eq!(normalize_gpu(" 1 , 0 ").unwrap(), "1,0");
        assert_eq!(normalize_gpu("0,01").unwrap(), "0,1");
        assert_eq!(normalize_gpu("000000000000000003").unwrap(), "3");
    }

    #[test]
    fn bad_fields_are_refused_with_the_reason() {
        for bad in ["", "a", "0,", ",0", "0;rm -rf /", "-1", "0 1", "1.0", "0\n"] {
            let e = normalize_gpu(bad).unwrap_err();
            assert!(e.contains("CUDA device indices"), "{bad:?}: {e}");
        }
        assert!(normalize_gpu("0,00").unwrap_err().contains("listed twice"));
        assert!(normalize_gpu("99999999999")
            .unwrap_err()
            .contains("out of range"));
    }

    #[test]
    fn overlapping_device_sets_are_detected() {
        let set = |s| DeviceSet::parse(s).unwrap();
        assert!(set("0,1").overlaps(&set("0")));
        assert!(set("1").overlaps(&set("0, 01")));
        assert!(!set("0,1").overlaps(&set("2,3")));
        let mut held = Reservations::default();
        held.hold("0,1");
        assert!(!held.is_free("00"));
        assert!(!held.is_free("1,2"));
        assert!(held.is_free("2"));
        held.hold("garbage");
        assert!(!held.is_free("2"));
    }
}
