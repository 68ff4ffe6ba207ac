//! The `Collective` conformance suite on MPI: this test starts `mpirun -np 2` on its own
//! test binary, whose ignored test `rank` runs the suite as each rank. Needs the `mpi`
//! feature (the README's test command turns it on) and Open MPI.
#![cfg(feature = "mpi")]

use std::process::Command;
use std::time::Duration;

use mtm_cluster::{Fabric, Topology};

#[test]
fn the_conformance_suite_passes_on_mpi() {
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
        .arg(&exe)
        .args([
            "rank",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .expect("mpirun must be installed (.ci/run installs openmpi-bin)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    // Both ranks ran the suite (and did not merely skip it).
    assert_eq!(
        text.matches("conformance passed on rank").count(),
        2,
        "{text}"
    );
}

/// One rank of the run above; outside `mpirun` there is nothing to do.
#[test]
#[ignore = "started by the_conformance_suite_passes_on_mpi under mpirun"]
fn rank() {
    let topology = Topology::from_env().unwrap();
    if topology.world_size < 2 {
        return;
    }
    let mut comm = mtm_cluster::connect(&topology, Duration::from_secs(60), Fabric::Host).unwrap();
    assert_eq!(comm.backend(), "mpi");
    mtm_cluster::conformance::run_all(comm.as_mut());
    println!("conformance passed on rank {}", topology.rank);
}
