//! Differential test: thousands of seeded random schematics (tricky strings, nested overlay
//! options, every field) through both our implementation and the Go oracle built on the real
//! gopkg.in/yaml.v3 (`tests/oracle/`). Canonical bytes and IDs must agree exactly.
//!
//! Needs `go` and Debian's `golang-gopkg-yaml.v3-dev` (the README's test command installs
//! them). Without them the test says so and passes, unless `BOOTFACTORY_REQUIRE_ORACLE=1`
//! (set by `.ci/run`) makes a missing oracle an error.

#[path = "support/schematic_gen.rs"]
mod schematic_gen;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;

use schematic_gen::{oracle_or_skip, random_schematic, run_oracle, to_input};

const CASES: usize = 5000;

#[test]
fn random_schematics_match_go_yaml() {
    let Some(oracle) = oracle_or_skip() else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(0x5eed_b007);
    let inputs: Vec<String> = (0..CASES)
        .map(|_| to_input(&random_schematic(&mut rng)))
        .collect();
    let results: Vec<Value> = run_oracle(&oracle, &inputs, false);

    let mut failures = Vec::new();
    let mut accepted = 0;
    for (input, want) in inputs.iter().zip(&results) {
        let ours = bootfactory::schematic::decode(input.as_bytes());
        match (want["ok"].as_bool().unwrap_or(false), ours) {
            (true, Ok(s)) => {
                accepted += 1;
                let canonical = s.canonical_yaml();
                if canonical != want["canonical"].as_str().unwrap_or_default()
                    || s.id().as_str() != want["id"].as_str().unwrap_or_default()
                {
                    failures.push(format!(
                        "input {input}\n   got {canonical:?}\n  want {:?}",
                        want["canonical"]
                    ));
                }
            }
            (false, Err(_)) => {}
            (ok, ours) => failures.push(format!(
                "input {input}: go-yaml ok={ok} ({}) but ours: {:?}",
                want["error"],
                ours.map(|s| s.canonical_yaml())
            )),
        }
    }
    assert!(
        accepted > CASES / 2,
        "too few accepted cases ({accepted}) to be meaningful"
    );
    assert!(
        failures.is_empty(),
        "{} of {CASES} differ:\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
