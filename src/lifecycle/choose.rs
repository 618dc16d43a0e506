//! Which versions go: pure, from the records and what is deployed.
//!
//! A version is protected while it is its model's published one (the model's link points at
//! its tree) or the one the index wants now (its tree may be half-way to being published).
//! Of the others, the newest `keep_previous` of each model are kept; a model no longer
//! deployed has no protected version, so its last one is kept like any previous version.

use std::collections::HashMap;

use super::record::Version;

/// What protects a deployed model's versions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protected {
    /// The tree key the index wants.
    pub wanted: String,
    /// The tree key its link points at, if any.
    pub current: Option<String>,
}

impl Protected {
    pub fn covers(&self, key: &str) -> bool {
        self.wanted == key || self.current.as_deref() == Some(key)
    }
}

/// Whether `version` is protected, given the deployed models (by id).
pub fn protected(version: &Version, deployed: &HashMap<String, Protected>) -> bool {
    deployed.get(&version.id).is_some_and(|p| p.covers(&version.key))
}

/// The indices of the records (`records` oldest first) to remove: every unprotected version
/// beyond the newest `keep_previous` of its model. Oldest first.
pub fn dropped(
    records: &[Version],
    deployed: &HashMap<String, Protected>,
    keep_previous: usize,
) -> Vec<usize> {
    let mut kept_per_model: HashMap<&str, usize> = HashMap::new();
    let mut drop: Vec<usize> = Vec::new();
    for (i, version) in records.iter().enumerate().rev() {
        if protected(version, deployed) {
            continue;
        }
        let kept = kept_per_model.entry(version.id.as_str()).or_default();
        if *kept < keep_previous {
            *kept += 1;
        } else {
            drop.push(i);
        }
    }
    drop.reverse();
    drop
}

/// The indices of the records the disk-pressure valve may remove, oldest first: every
/// unprotected version, kept or not.
pub fn spare(records: &[Version], deployed: &HashMap<String, Protected>) -> Vec<usize> {
    (0..records.len()).filter(|&i| !protected(&records[i], deployed)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: &str, key: &str, seq: u128) -> Version {
        Version {
            id: id.into(),
            key: key.into(),
            version: "1".into(),
            chakra: "ajna".into(),
            seq,
            commit: None,
            files: Vec::new(),
            snapshots: Vec::new(),
            refs: Vec::new(),
        }
    }

    fn deployed(entries: &[(&str, &str, Option<&str>)]) -> HashMap<String, Protected> {
        entries
            .iter()
            .map(|(id, wanted, current)| {
                (
                    id.to_string(),
                    Protected { wanted: wanted.to_string(), current: current.map(str::to_owned) },
                )
            })
            .collect()
    }

    #[test]
    fn the_newest_previous_versions_are_kept_per_model() {
        let records =
            vec![v("a", "a1", 1), v("b", "b1", 2), v("a", "a2", 3), v("a", "a3", 4), v("b", "b2", 5)];
        let d = deployed(&[("a", "a3", Some("a3")), ("b", "b2", Some("b2"))]);
        assert_eq!(dropped(&records, &d, 1), [0]);
        assert_eq!(dropped(&records, &d, 0), [0, 1, 2]);
        assert_eq!(dropped(&records, &d, 5), Vec::<usize>::new());
    }

    #[test]
    fn the_published_and_the_wanted_version_are_never_dropped() {
        // The index wants a3, which is not published yet (a1 is); a2 is previous.
        let records = vec![v("a", "a1", 1), v("a", "a2", 2), v("a", "a3", 3)];
        let d = deployed(&[("a", "a3", Some("a1"))]);
        assert_eq!(dropped(&records, &d, 0), [1]);
        assert_eq!(spare(&records, &d), [1]);
    }

    #[test]
    fn a_removed_model_keeps_its_last_versions_as_previous_ones() {
        let records = vec![v("gone", "g1", 1), v("gone", "g2", 2)];
        let d = deployed(&[]);
        assert_eq!(dropped(&records, &d, 1), [0]);
        assert_eq!(dropped(&records, &d, 0), [0, 1]);
        assert_eq!(spare(&records, &d), [0, 1]);
    }

    #[test]
    fn the_valve_takes_kept_versions_oldest_first() {
        let records = vec![v("a", "a1", 1), v("b", "b1", 2), v("a", "a2", 3), v("b", "b2", 4)];
        let d = deployed(&[("a", "a2", Some("a2")), ("b", "b2", Some("b2"))]);
        assert_eq!(dropped(&records, &d, 1), Vec::<usize>::new());
        assert_eq!(spare(&records, &d), [0, 1]);
    }
}
