//! Allen CCF structure ids to acronyms, with the IBL Beryl and Cosmos coarsenings.
//! The table (`data/allen_regions.csv`) is committed; `data/SOURCE.md` says where from.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// Which level of the region hierarchy units are labelled with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegionLevel {
    /// The Allen acronym of the channel's structure (as the published MtM data).
    #[default]
    Allen,
    /// IBL's Beryl parcellation (308 regions).
    Beryl,
    /// IBL's Cosmos parcellation (10 regions).
    Cosmos,
}

impl std::str::FromStr for RegionLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "allen" => Ok(Self::Allen),
            "beryl" => Ok(Self::Beryl),
            "cosmos" => Ok(Self::Cosmos),
            other => Err(format!(
                "unknown region level `{other}` (allen, beryl or cosmos)"
            )),
        }
    }
}

struct Entry {
    acronym: String,
    beryl: String,
    cosmos: String,
}

fn table() -> &'static HashMap<i64, Entry> {
    static TABLE: OnceLock<HashMap<i64, Entry>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut reader =
            csv::Reader::from_reader(include_str!("../data/allen_regions.csv").as_bytes());
        reader
            .records()
            .map(|r| {
                let r = r.expect("the committed region table is valid CSV");
                let id: i64 = r[0]
                    .parse()
                    .expect("the committed region table has integer ids");
                (
                    id,
                    Entry {
                        acronym: r[1].to_string(),
                        beryl: r[2].to_string(),
                        cosmos: r[3].to_string(),
                    },
                )
            })
            .collect()
    })
}

/// The acronym of Allen structure `id` at `level`; lateralised (negative) ids count as their
/// absolute value. `None` for an id the atlas does not know.
pub fn acronym(id: i64, level: RegionLevel) -> Option<&'static str> {
    let entry = table().get(&id.abs())?;
    Some(match level {
        RegionLevel::Allen => &entry.acronym,
        RegionLevel::Beryl => &entry.beryl,
        RegionLevel::Cosmos => &entry.cosmos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_structures_map_at_every_level() {
        assert_eq!(acronym(382, RegionLevel::Allen), Some("CA1"));
        assert_eq!(acronym(382, RegionLevel::Cosmos), Some("HPF"));
        assert_eq!(acronym(10703, RegionLevel::Allen), Some("DG-mo"));
        assert_eq!(acronym(10703, RegionLevel::Beryl), Some("DG"));
        assert_eq!(acronym(-218, RegionLevel::Allen), Some("LP"));
        assert_eq!(acronym(0, RegionLevel::Allen), Some("void"));
        assert_eq!(acronym(997, RegionLevel::Cosmos), Some("root"));
        assert_eq!(acronym(123_456_789_000, RegionLevel::Allen), None);
        assert_eq!(table().len(), 1328);
    }
}
