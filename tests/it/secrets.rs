//! Secrets at the most verbose log level: a sync that succeeds through every step that logs a
//! URL (resolve, redirect to another origin, expired presigned URL resolved again, reset and
//! resume, parallel chunks), syncs that fail in every way that puts a URL in an error, and the
//! daemon, all with `MODELS_FETCH_LOG=trace` (every crate's events, reqwest and hyper included).
//! Neither the token, nor a presigned query (the Hub's, or one written in a `downloadUrl`), nor
//! a proxy's password may appear in stderr, stdout, `status --json`, or any file models-fetch
//! writes; no request to a CDN may carry `Authorization` (while the Hub's do). The journal at
//! trace level is checked the same way by `journal.rs`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::fixture::layout::file_text;
use crate::fixture::{AJNA, ANAHATA, MANIPURA, Model, Site, TOKEN, data, run_with_limit, signal, terminate};
use crate::origin::{Blob, Fault, Host, Route, Rule};

/// A query secret written in an index `downloadUrl`.
const URL_SECRET: &str = "IndexQuerySecret";
/// A password in the proxy variables.
const PROXY_SECRET: &str = "ProxyPasswordSecret";

/// A model fetched from a plain `downloadUrl` that carries a signed query.
const PLAIN: Model = Model::new("sahasrara-crown-v1", "sahasrara", "sahasrara-crown-v1.bin", "unused/unused");

fn assert_clean(site: &Site, text: &str, what: &str) {
    site.assert_no_secret_in(text, what);
    assert!(!text.contains(URL_SECRET), "the downloadUrl's query is in {what}:\n{text}");
    assert!(!text.contains(PROXY_SECRET), "the proxy password is in {what}:\n{text}");
}

/// Every file models-fetch wrote (the cache, the store, the metrics) holds no secret.
fn assert_files_clean(site: &Site) {
    let metrics = site.path("metrics.prom");
    let metrics = file_text(&metrics).map(|text| (metrics, text));
    for (path, text) in site.written_texts().into_iter().chain(metrics) {
        assert_clean(site, &text, &path.display().to_string());
    }
}

/// The index of `models` plus [`PLAIN`], whose `downloadUrl` names `plain` on the CDN with a
/// signed query.
fn write_index_with_plain(site: &Site, models: &[(Model, &Blob)], plain: &Blob) {
    site.write_index(models);
    let mut index = site.index(models);
    let mut entry = index["models"][0].clone();
    entry["id"] = PLAIN.id.into();
    entry["chakra"] = PLAIN.chakra.into();
    entry["artifact"] = serde_json::json!({
        "filename": PLAIN.filename,
        "sha256": plain.sha256,
        "sizeBytes": plain.size,
        "downloadUrl": format!(
            "{}/blobs/{}?X-Amz-Signature={URL_SECRET}&X-Amz-Credential={URL_SECRET}",
            site.origin().cdn_url(),
            plain.sha256
        ),
    });
    index["models"].as_array_mut().expect("models").push(entry);
    site.write_index_json(&index);
    let ids: Vec<&str> = models.iter().map(|(m, _)| m.id).chain([PLAIN.id]).collect();
    site.set("deployed_models", ids);
    site.write_config();
}

fn hub_got_the_token(site: &Site) -> bool {
    site.origin()
        .requests_to(Route::HubHead)
        .iter()
        .any(|r| r.header("authorization") == Some(format!("Bearer {TOKEN}").as_str()))
}

#[test]
fn syncs_at_trace_level_succeeding_and_failing_print_no_secret() {
    let site = Site::new();
    site.set("chunk_size", "64KiB");
    site.set("connections_per_file", 2);
    site.set("metrics_file", "metrics.prom");
    // Succeeds: an expired presigned URL, then a reset and a resume, for one model; a redirect
    // to another origin for another; parallel chunks for the third; a signed downloadUrl.
    let ajna = site.serve(AJNA, data(1, 100 << 10));
    let anahata = site.serve(ANAHATA, data(2, 100 << 10));
    let manipura = site.serve(MANIPURA, data(3, 256 << 10));
    let plain = site.origin().publish("unused/unused", "plain.bin", data(4, 50 << 10));
    site.origin().add(Rule::once(Route::Cdn, Fault::Expired).for_target(&ajna.sha256));
    site.origin().add(Rule::once(Route::Cdn, Fault::ResetAfter(40 << 10)).for_target(&ajna.sha256));
    site.origin().add(Rule::always(Route::Cdn, Fault::RedirectTo(Host::Cdn2)).for_target(&anahata.sha256));
    site.origin()
        .add(Rule::once(Route::Cdn, Fault::status(503, &[("Retry-After", "0")])).for_target(&plain.sha256));
    write_index_with_plain(&site, &[(AJNA, &ajna), (ANAHATA, &anahata), (MANIPURA, &manipura)], &plain);
    let run = site.sync_at(Some("trace"));
    run.assert_ok();
    assert!(run.stderr.lines().count() > 50, "trace level printed little:\n{}", run.out);
    assert!(run.stderr.contains("TRACE"), "no TRACE event:\n{}", run.out);
    // Presigned URLs were logged, redacted: the check below is not vacuous.
    assert!(run.stderr.contains("?<redacted>"), "no redacted URL in the log:\n{}", run.out);
    assert_clean(&site, &run.out, "the output of a good sync at trace level");
    assert!(hub_got_the_token(&site), "the Hub never got the token: the check means nothing");
    assert!(!site.origin().requests_to(Route::Cdn2).is_empty(), "the other origin was never asked");

    // Fails, every model in another way: wrong bytes, a CDN that refuses every presigned URL,
    // a redirect loop, an endless 5xx on the signed downloadUrl.
    site.origin().heal();
    let bad = [
        site.serve(AJNA, data(11, 64 << 10)),
        site.serve(ANAHATA, data(12, 64 << 10)),
        site.serve(MANIPURA, data(13, 64 << 10)),
    ];
    let plain2 = site.origin().publish("unused/unused", "plain.bin", data(14, 50 << 10));
    site.origin().add(Rule::always(Route::Cdn, Fault::FlipByte(5)).for_target(&bad[0].sha256));
    site.origin().add(Rule::always(Route::Cdn, Fault::Expired).for_target(&bad[1].sha256));
    site.origin().add(Rule::always(Route::Cdn, Fault::RedirectToSelf).for_target(&bad[2].sha256));
    site.origin().add(Rule::always(Route::Cdn, Fault::status(503, &[])).for_target(&plain2.sha256));
    write_index_with_plain(&site, &[(AJNA, &bad[0]), (ANAHATA, &bad[1]), (MANIPURA, &bad[2])], &plain2);
    let run = site.sync_at(Some("trace"));
    assert!(matches!(run.code, Some(65)), "exit {:?}:\n{}", run.code, run.out);
    for model in [AJNA, ANAHATA, MANIPURA, PLAIN] {
        assert!(
            run.stderr.contains(&format!("{}: FAILED", model.id)),
            "{} did not fail:\n{}",
            model.id,
            run.out
        );
    }
    assert_clean(&site, &run.out, "the output of a failing sync at trace level");

    // A private Hub that refuses the token, and a proxy with a password that is not there.
    site.origin().heal();
    site.origin().add(Rule::always(Route::HubHead, Fault::status(401, &[])));
    let mut command = site.command(&["sync"]);
    command.env("MODELS_FETCH_LOG", "trace");
    let proxy = format!("http://user:{PROXY_SECRET}@127.0.0.1:9");
    command.env("HTTP_PROXY", &proxy).env("HTTPS_PROXY", &proxy).env("NO_PROXY", "127.0.0.1");
    let run = run_with_limit(command, Duration::from_secs(60), &|| false);
    assert_ne!(run.code, Some(0), "{}", run.out);
    assert_clean(&site, &run.out, "the output of a sync refused by the Hub");
    let mut command = site.command(&["sync"]);
    command.env("MODELS_FETCH_LOG", "trace");
    command.env("HTTP_PROXY", &proxy).env("HTTPS_PROXY", &proxy).env("ALL_PROXY", &proxy);
    let run = run_with_limit(command, Duration::from_secs(60), &|| false);
    assert_ne!(run.code, Some(0), "the proxy at 127.0.0.1:9 answered?\n{}", run.out);
    assert_clean(&site, &run.out, "the output of a sync through an unreachable proxy");

    let status =
        site.command(&["status", "--json"]).env("MODELS_FETCH_LOG", "trace").output().expect("status");
    assert_clean(&site, &String::from_utf8_lossy(&status.stdout), "status --json");
    assert_clean(&site, &String::from_utf8_lossy(&status.stderr), "the stderr of status");
    assert_files_clean(&site);
    site.assert_cdn_never_got_the_token();
}

#[test]
fn daemon_at_trace_level_logs_no_secret_anywhere() {
    let site = Site::new();
    site.set("metrics_file", "metrics.prom");
    let good = site.serve(AJNA, data(1, 200 << 10));
    let bad = site.serve(ANAHATA, data(2, 64 << 10));
    let plain = site.origin().publish("unused/unused", "plain.bin", data(4, 50 << 10));
    site.origin().add(Rule::once(Route::Cdn, Fault::Expired).for_target(&good.sha256));
    site.origin().add(Rule::once(Route::Cdn, Fault::ResetAfter(64 << 10)).for_target(&good.sha256));
    site.origin().add(Rule::always(Route::Cdn, Fault::Expired).for_target(&bad.sha256));
    write_index_with_plain(&site, &[(AJNA, &good), (ANAHATA, &bad)], &plain);
    let log = site.path("daemon.log");
    let mut daemon = site.spawn_daemon("trace", &log);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = site.command(&["status", "--json"]).output().expect("status");
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        let states: Vec<&str> = status["models"]
            .as_array()
            .map(|models| models.iter().filter_map(|m| m["state"].as_str()).collect())
            .unwrap_or_default();
        if states == ["ready", "failed", "ready"] {
            assert_clean(&site, &String::from_utf8_lossy(&output.stdout), "status --json");
            break;
        }
        assert!(Instant::now() < deadline, "the models did not settle: {states:?}\n{}", read(&log));
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(&daemon, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    terminate(&mut daemon, &log);
    let text = read(&log);
    assert!(text.contains("TRACE"), "no TRACE event in the daemon's log:\n{text}");
    assert_clean(&site, &text, "the daemon's log at trace level");
    assert_files_clean(&site);
    assert!(hub_got_the_token(&site), "the Hub never got the token: the check means nothing");
    site.assert_cdn_never_got_the_token();
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
