//! The NixOS module's side: every Nix file parses, deadnix and nixpkgs-fmt find nothing, the
//! module's logic (`nix/lib.nix`) evaluated for real on the cases in `tests/nix/cases.nix`,
//! the config file it renders read by the daemon itself through the module's build-time check,
//! what Nix computes that the daemon computes too (fetch-model.nix's URLs for hostile names,
//! the stub fields it refuses) compared with the daemon's, and its unit compared with
//! `packaging/models-fetch.service` key by key and scored by `systemd-analyze security`.
//!
//! The tools are installed by `.ci/test`. Without them these tests fail with a hint, unless
//! `MODELS_FETCH_SKIP_NIX=1` (nix-instantiate, deadnix, nixpkgs-fmt) or
//! `MODELS_FETCH_SKIP_SYSTEMD_ANALYZE=1` is set.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::util::{models_fetch, root, temp_dir, text, write};

/// The Nix files CI checks: everything the NixOS side owns.
const NIX_LINT_PATHS: [&str; 4] = ["module.nix", "flake.nix", "nix", "tests/nix"];

/// A tool on PATH (or in cargo's bin directory), or `None` when `skip_var` is set; panics with
/// a hint otherwise, so a missing tool never passes silently.
fn tool(name: &str, skip_var: &str, install: &str) -> Option<PathBuf> {
    if std::env::var_os(skip_var).is_some() {
        eprintln!("{skip_var} set: checks needing {name} skipped");
        return None;
    }
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|d| d.join("bin"));
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(cargo_bin)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    assert!(
        found.is_some(),
        "{name} not found on PATH: {install} (.ci/test does), or set {skip_var}=1 to skip"
    );
    found
}

fn nix_instantiate() -> Option<PathBuf> {
    tool("nix-instantiate", "MODELS_FETCH_SKIP_NIX", "apt-get install nix-bin")
}

/// `tests/nix/cases.nix`, evaluated once.
fn cases() -> Option<&'static Value> {
    static CASES: OnceLock<Value> = OnceLock::new();
    let nix = nix_instantiate()?;
    Some(CASES.get_or_init(|| {
        let output = Command::new(nix)
            .args(["--readonly-mode", "--eval", "--strict", "--json", "tests/nix/cases.nix"])
            .current_dir(root())
            .env("NIX_PATH", "")
            .output()
            .expect("nix-instantiate runs");
        assert!(output.status.success(), "evaluating tests/nix/cases.nix failed:\n{}", text(&output));
        serde_json::from_slice(&output.stdout).expect("nix-instantiate prints JSON")
    }))
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_else(|| panic!("{key} is not a string in {value}"))
}

/// Every `.nix` file of the repository (not target/ or the tools' folders).
fn nix_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_dir() {
                if !name.starts_with('.') && !matches!(name.as_str(), "target" | "node_modules" | "venv") {
                    walk(&path, found);
                }
            } else if name.ends_with(".nix") {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(root(), &mut found);
    found.sort();
    found
}

#[test]
fn every_nix_file_parses() {
    let Some(nix) = nix_instantiate() else { return };
    let files = nix_files();
    for required in ["module.nix", "flake.nix", "nix/lib.nix", "nix/package.nix", "nix/tests/vm.nix"] {
        assert!(files.contains(&root().join(required)), "{required} is missing");
    }
    // One file at a time, so an error names its file. `--parse` also catches an undefined
    // variable (the module uses no `with`, so every name is checked).
    for file in files {
        let output = Command::new(&nix).arg("--parse").arg(&file).output().expect("nix-instantiate runs");
        assert!(output.status.success(), "{} does not parse:\n{}", file.display(), text(&output));
    }
}

#[test]
fn deadnix_finds_no_unused_code() {
    let Some(deadnix) = tool("deadnix", "MODELS_FETCH_SKIP_NIX", "cargo install --locked deadnix@1.3.1")
    else {
        return;
    };
    let output =
        Command::new(deadnix).arg("--fail").args(NIX_LINT_PATHS).current_dir(root()).output().unwrap();
    assert!(output.status.success(), "deadnix --fail:\n{}", text(&output));
}

#[test]
fn nixpkgs_fmt_finds_nothing_to_change() {
    let Some(fmt) = tool("nixpkgs-fmt", "MODELS_FETCH_SKIP_NIX", "cargo install --locked nixpkgs-fmt@1.3.0")
    else {
        return;
    };
    // nixpkgs-fmt exits 0 on a syntax error: every_nix_file_parses covers that.
    let output = Command::new(fmt).arg("--check").args(NIX_LINT_PATHS).current_dir(root()).output().unwrap();
    assert!(output.status.success(), "nixpkgs-fmt --check (run `nixpkgs-fmt` on these):\n{}", text(&output));
}

#[test]
fn pure_logic_checks() {
    let Some(cases) = cases() else { return };
    let mut failures = Vec::new();
    for check in cases["checks"].as_array().unwrap() {
        if check["got"] != check["want"] {
            failures.push(format!(
                "{}:\n  got  {}\n  want {}",
                str_of(check, "name"),
                serde_json::to_string_pretty(&check["got"]).unwrap(),
                serde_json::to_string_pretty(&check["want"]).unwrap()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn each_assertion_fires_on_its_bad_input_and_none_on_good_ones() {
    let Some(cases) = cases() else { return };
    let mut failures = Vec::new();
    for case in cases["cases"].as_array().unwrap() {
        let name = str_of(case, "name");
        let failed: Vec<&str> =
            case["failedAssertions"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
        let expected: Vec<&str> =
            case["refusedBy"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
        if expected.is_empty() && !failed.is_empty() {
            failures
                .push(format!("{name}: expected no failed assertion, got:\n    {}", failed.join("\n    ")));
        }
        for part in expected {
            if !failed.iter().any(|m| m.contains(part)) {
                failures.push(format!(
                    "{name}: no failed assertion contains {part:?}; got:\n    {}",
                    failed.join("\n    ")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The file the module deploys, read by the daemon through the module's own build-time check
/// (checkConfig: the shell lines module.nix runs): accepted where the module accepts it,
/// refused (78) with the daemon's message and the module's note naming the options where the
/// daemon owns the rule; and the JSON holds exactly the settings.
#[test]
fn build_time_check_reads_the_rendered_config() {
    let Some(cases) = cases() else { return };
    let dir = temp_dir();
    let mut failures = Vec::new();
    for case in cases["cases"].as_array().unwrap() {
        let name = str_of(case, "name");
        let json_text = str_of(case, "json");
        match serde_json::from_str::<Value>(json_text) {
            Ok(parsed) if parsed == as_rendered(&case["settings"]) => {}
            Ok(_) => failures.push(format!("{name}: the JSON does not hold the settings:\n{json_text}")),
            Err(e) => failures.push(format!("{name}: not JSON: {e}\n{json_text}")),
        }
        let daemon = &case["daemon"];
        if daemon.is_null() {
            continue;
        }
        let config = write(dir.path(), &format!("{name}.json"), json_text);
        let output = Command::new("bash")
            .args(["-euc", str_of(case, "check")])
            .env("MODELS_FETCH", env!("CARGO_BIN_EXE_models-fetch"))
            .env("CONFIG", &config)
            .current_dir(dir.path())
            .output()
            .expect("bash runs");
        let out = text(&output);
        let module_accepts = case["failedAssertions"].as_array().unwrap().is_empty();
        if daemon == "accepts" {
            if output.status.code() != Some(0) || !out.is_empty() {
                failures.push(format!(
                    "{name}: the build-time check refused the module's file:\n{out}\n{json_text}"
                ));
            }
            if !module_accepts {
                failures.push(format!("{name}: the daemon accepts it, the module's assertions do not"));
            }
        } else {
            let reason =
                daemon["refuses"].as_str().expect("daemon is \"accepts\", { refuses = ...; } or null");
            let names_options = out.contains("models-fetch refused the config this module generated")
                && out.contains("deployed_models = services.models.deployedModels")
                && out.contains("services.models.settings.<key>");
            if output.status.code() != Some(78) || !out.contains(reason) || !names_options {
                failures.push(format!(
                    "{name}: expected exit 78 with {reason:?} and the options' names, got {:?}:\n{out}",
                    output.status
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// nix/fetch-model.nix computes the URL of a file in Nix; for hostile names (spaces, `+`, `=`,
/// `#`, `%`, `?`, `&`, quotes, non-ASCII of two, three and four bytes, nested folders,
/// revisions with `/`, resolve-form downloadUrls encoded or not, on the public Hub, another
/// host or with an upper-case host) it is the URL `models-fetch plan` fetches, and the module's
/// deploy order is the daemon's.
#[test]
fn fetch_model_urls_are_the_daemons_for_hostile_names() {
    let Some(cases) = cases() else { return };
    let urls = &cases["shared"]["urls"];
    let dir = temp_dir();
    let config = write(dir.path(), "hostile.json", str_of(urls, "json"));
    let output = models_fetch(&["plan", "--json", "--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let plan: Value = serde_json::from_slice(&output.stdout).unwrap();
    let daemon: Vec<(&str, &str)> =
        plan["items"].as_array().unwrap().iter().map(|i| (str_of(i, "id"), str_of(i, "source"))).collect();
    let order: Vec<&str> =
        urls["deploySet"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(daemon.iter().map(|(id, _)| *id).collect::<Vec<_>>(), order, "the deploy order differs");
    let nix: BTreeMap<&str, &str> =
        urls["fetchModel"].as_array().unwrap().iter().map(|m| (str_of(m, "id"), str_of(m, "url"))).collect();
    assert_eq!(nix.len(), daemon.len());
    let differences: Vec<String> = daemon
        .iter()
        .filter(|(id, url)| nix.get(id) != Some(url))
        .map(|(id, url)| {
            format!("{id}:\n  daemon    {url}\n  Nix       {}", nix.get(id).unwrap_or(&"(none)"))
        })
        .collect();
    assert!(differences.is_empty(), "fetch-model.nix and the daemon disagree:\n{}", differences.join("\n"));
}

/// fetch-model.nix refuses stub entries by its own reading of the stub rules (it has no daemon
/// to ask); it names the fields `models-fetch plan` names.
#[test]
fn fetch_model_refuses_the_stub_fields_the_daemon_refuses() {
    let Some(cases) = cases() else { return };
    let dir = temp_dir();
    for stub in cases["shared"]["stubs"].as_array().unwrap() {
        let id = str_of(stub, "id");
        assert_eq!(stub["refused"], true, "fetch-model.nix fetches the stub {id}");
        let config = serde_json::json!({ "index": stub["index"], "deployed_models": [id] });
        let config = write(dir.path(), &format!("{id}.json"), &config.to_string());
        let out = text(&models_fetch(&["plan", "--config", config.to_str().unwrap()]));
        let listed = out
            .lines()
            .find(|l| l.contains(&format!("Model '{id}' is a stub entry")))
            .and_then(|l| l.split("replace the placeholder values of: ").nth(1))
            .unwrap_or_else(|| panic!("the daemon does not refuse {id} as a stub:\n{out}"));
        let mut daemon: Vec<&str> = listed.split(", ").collect();
        let mut nix: Vec<&str> =
            stub["fields"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
        daemon.sort_unstable();
        nix.sort_unstable();
        assert_eq!(nix, daemon, "{id}: fetch-model.nix and the daemon name different stub fields");
    }
}

/// The daemon's keys (from its own "unknown field" error, which lists them all) and the
/// module's: every key the typed options write is one the daemon reads, `token_file` is never
/// written, and every other daemon key has an example in tests/nix/cases.nix that the daemon
/// accepts (case good-every-key), so a new daemon key cannot go unnoticed here.
#[test]
fn module_and_daemon_agree_on_every_key() {
    let Some(cases) = cases() else { return };
    let dir = temp_dir();
    let config = write(dir.path(), "bogus.json", r#"{"index": "index.json", "no_such_key_at_all": 1}"#);
    let out = text(&models_fetch(&["plan", "--config", config.to_str().unwrap()]));
    let listed = out.split("expected one of").nth(1).unwrap_or_else(|| panic!("no key list in:\n{out}"));
    let daemon: Vec<&str> = listed.split('`').skip(1).step_by(2).collect();
    assert!(daemon.contains(&"index") && daemon.contains(&"token_file"), "{daemon:?}");
    let names = |key: &str| -> Vec<String> {
        cases["keys"][key].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_owned()).collect()
    };
    let (typed, via_settings) = (names("typed"), names("viaSettings"));
    assert!(!typed.iter().any(|k| k == "token_file"), "the module must never write token_file");
    for key in typed.iter().chain(&via_settings) {
        assert!(daemon.contains(&key.as_str()), "the daemon does not know the key {key:?}: {daemon:?}");
    }
    let uncovered: Vec<&&str> = daemon
        .iter()
        .filter(|k| **k != "token_file" && !typed.iter().chain(&via_settings).any(|m| m == *k))
        .collect();
    assert!(
        uncovered.is_empty(),
        "daemon keys the module's tests do not cover: {uncovered:?}; add an example value to everyOtherKey \
         in tests/nix/cases.nix (they reach the daemon through services.models.settings)"
    );
}

/// The settings as the file holds them: without nulls, at the top and in tables.
fn as_rendered(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), as_rendered(v))).collect(),
        ),
        other => other.clone(),
    }
}

/// A unit file as `section -> key -> values` (a key given twice keeps both values, in order);
/// booleans normalised, since NixOS writes `true` where a hand-written unit says `yes`.
type Unit = BTreeMap<(String, String), Vec<String>>;

fn parse_unit(text: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not a unit line: {line}"));
        let value = match value.trim() {
            "yes" | "true" | "on" => "yes",
            "no" | "false" | "off" => "no",
            v => v,
        };
        unit.entry((section.clone(), key.trim().to_owned())).or_default().push(value.to_owned());
    }
    unit
}

/// Keys whose values differ between the two units, as `[section] key: module | packaging`.
fn unit_differences(module: &Unit, packaging: &Unit) -> Vec<String> {
    let keys: std::collections::BTreeSet<_> = module.keys().chain(packaging.keys()).collect();
    keys.into_iter()
        .filter(|k| module.get(*k) != packaging.get(*k))
        .map(|(section, key)| {
            format!(
                "[{section}] {key}: module {:?} | packaging {:?}",
                module.get(&(section.clone(), key.clone())),
                packaging.get(&(section.clone(), key.clone()))
            )
        })
        .collect()
}

#[test]
fn unit_matches_the_packaging_unit() {
    let Some(cases) = cases() else { return };
    let packaging =
        parse_unit(&std::fs::read_to_string(root().join("packaging/models-fetch.service")).unwrap());
    // The only differences allowed: Group= (the module's static group, which packaging/
    // leaves to a drop-in) and, without a tokenFile, LoadCredential=. ExecStart= and
    // ExecReload= are rendered with packaging/'s paths (/usr/bin/models-fetch, /bin/kill).
    for (name, allowed) in [("default", &["Group", "LoadCredential"][..]), ("withToken", &["Group"][..])] {
        let module = parse_unit(str_of(&cases["units"], name));
        let differences: Vec<String> = unit_differences(&module, &packaging)
            .into_iter()
            .filter(|d| !allowed.iter().any(|key| d.starts_with(&format!("[Service] {key}:"))))
            .collect();
        assert!(
            differences.is_empty(),
            "the module's unit ({name}) differs from packaging/models-fetch.service:\n{}",
            differences.join("\n")
        );
        let group = &module[&("Service".to_owned(), "Group".to_owned())];
        assert_eq!(group, &["models"], "{name}");
    }
    let module = parse_unit(str_of(&cases["units"], "default"));
    assert!(!module.contains_key(&("Service".to_owned(), "LoadCredential".to_owned())));
}

#[test]
fn unit_scores_at_most_1_5_in_systemd_analyze_security() {
    let Some(cases) = cases() else { return };
    let Some(analyze) =
        tool("systemd-analyze", "MODELS_FETCH_SKIP_SYSTEMD_ANALYZE", "apt-get install systemd")
    else {
        return;
    };
    for name in ["default", "withToken"] {
        let dir = temp_dir();
        let unit = write(dir.path(), "models-fetch.service", str_of(&cases["units"], name));
        let output = Command::new(&analyze).args(["security", "--offline=true"]).arg(&unit).output().unwrap();
        let out = text(&output);
        let score: f64 = out
            .lines()
            .find_map(|l| l.split("Overall exposure level for models-fetch.service: ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no score in systemd-analyze's output:\n{out}"));
        assert!(score <= 1.5, "{name}: exposure {score} > 1.5:\n{out}");
    }
}

/// The index the fetch-model.nix cases of a set of files read is one the daemon accepts, so
/// what they test is what a real index can hold.
#[test]
fn fetch_model_set_cases_read_a_valid_index() {
    let output = models_fetch(&["validate", "--deny-stubs", "tests/nix/file-set-index.json"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}
