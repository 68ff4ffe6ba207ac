//! Sessions chosen as IBL users name them (`data.select`): from a list file and from a ONE
//! cache written by pandas as ONE 2+ writes it, by project and by tag; resolved against a
//! dataset by the one rule every command uses (`wanted_eids`).

use mtm_dataloader::synth::{SynthConfig, write_dataset};
use mtm_dataloader::{Dataset, SessionSelect, WriteOptions};
use mtm_tests::{TestRun, run_python};
use mtm_trainer::data::wanted_eids;

const TAG: &str = "2022_Q2_IBL_et_al_RepeatedSite";

#[test]
fn lists_projects_and_tags_choose_the_sessions_a_run_uses() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = SynthConfig {
        sessions: 4,
        seed: 5,
        units: (10, 12),
        trials: (20, 20),
        regions: (2, 2),
        ..SynthConfig::default()
    };
    write_dataset(
        data.to_str().unwrap(),
        &config,
        WriteOptions::default(),
        |_, _| {},
    )
    .unwrap();
    let dataset = Dataset::open(data.to_str().unwrap()).unwrap();
    let mut eids: Vec<String> = dataset.sessions.iter().map(|s| s.eid.clone()).collect();
    eids.sort();
    let [a, b, c, d] = [&eids[0], &eids[1], &eids[2], &eids[3]];
    // One session the cache knows and the dataset does not hold.
    let absent = "ffffffff-0000-0000-0000-000000000000";
    let cache = dir.path().join("ONE");
    run_python(
        "make_one_cache.py",
        &[
            cache.to_str().unwrap(),
            TAG,
            &format!("{a}:ibl_neuropixel_brainwide_01"),
            &format!("{b}:ibl_neuropixel_brainwide_01,ibl_repeated_site:tagged"),
            &format!("{c}:ibl_neuropixel_brainwide_01_extra:tagged"),
            &format!("{d}:-"),
            &format!("{absent}:ibl_neuropixel_brainwide_01:tagged"),
        ],
    );
    let wanted = |select: SessionSelect| {
        let run = TestRun::new(dir.path()).with(|c| {
            c.data.root = data.to_str().unwrap().into();
            c.data.synthesize = None;
            c.data.select = Some(select);
        });
        wanted_eids(&run.config(), &dataset)
    };
    let one = |projects: &[&str], tag: Option<&str>| SessionSelect {
        one_cache: Some(cache.clone()),
        projects: projects.iter().map(|p| p.to_string()).collect(),
        tag: tag.map(str::to_string),
        ..Default::default()
    };

    // A project is matched whole within the comma-separated column: not `..._extra`.
    let mut got = wanted(one(&["ibl_neuropixel_brainwide_01"], None)).unwrap();
    got.sort();
    assert_eq!(got, [a.as_str(), b.as_str()]);
    assert_eq!(
        wanted(one(&["ibl_repeated_site"], None)).unwrap(),
        [b.as_str()]
    );
    // A tag is its own cache; the session the dataset lacks is left out.
    let mut got = wanted(one(&[], Some(TAG))).unwrap();
    got.sort();
    assert_eq!(got, [b.as_str(), c.as_str()]);
    // Tag and project together: both must hold.
    assert_eq!(
        wanted(one(&["ibl_neuropixel_brainwide_01"], Some(TAG))).unwrap(),
        [b.as_str()]
    );

    // A list (BWB's one-eid-a-line files, or a manifest's session folders), in its order,
    // intersected with the cache's choice when both are given.
    let list = dir.path().join("pretrain_recording_ids.txt");
    std::fs::write(&list, format!("{d}\n# a comment\n{c}_aligned\n{a}\n")).unwrap();
    let listed = SessionSelect {
        list: Some(list.to_str().unwrap().into()),
        ..Default::default()
    };
    assert_eq!(
        wanted(listed.clone()).unwrap(),
        [d.as_str(), c.as_str(), a.as_str()]
    );
    let both = SessionSelect {
        projects: vec!["ibl_neuropixel_brainwide_01".into()],
        one_cache: Some(cache.clone()),
        ..listed
    };
    assert_eq!(wanted(both).unwrap(), [a.as_str()]);

    // Errors name what is wrong.
    let err = wanted(one(&["no_such_project"], None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("chooses no session"), "{err}");
    let err = wanted(one(&[], Some("no_such_tag")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no_such_tag") && err.contains("load_cache"),
        "{err}"
    );
    let mut both_ways = TestRun::new(dir.path()).config();
    both_ways.data.sessions = vec![a.to_string()];
    both_ways.data.select = Some(one(&[], None));
    let err = both_ways.validated("test").unwrap_err().to_string();
    assert!(err.contains("data.sessions or data.select"), "{err}");
}
