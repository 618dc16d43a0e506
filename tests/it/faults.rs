//! `models-fetch sync` against a faulty origin (`origin.rs`): every test asserts the end state
//! of the published tree. A transient fault (resets, stalls, 429/5xx, truncation, a server that
//! ignores `Range`, an expired presigned URL) must end in a verified publish; a hostile one (wrong
//! bytes, wrong size, redirect loop, https -> http) in a non-zero exit naming the model and the
//! reason, nothing at a published name, and the version published before still intact.
//!
//! Every run also checks that the token and the presigned query never reach the output and that
//! no request to a CDN carried `Authorization`.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::fixture::{AJNA, ANAHATA, Model, Site, TOKEN, data, sha256_hex};
use crate::origin::{Blob, Fault, Host, Origin, Request, Route, Rule, SIGNATURE_MARKER};

const REPO: &str = AJNA.repo;
const FILENAME: &str = AJNA.filename;
/// The size of the files served: big enough for several reads, small enough to be quick.
const SIZE: usize = 1536 * 1024;

/// A site whose files are fetched in parallel ranged chunks of 256 KiB (six for [`SIZE`]) over
/// `connections` connections.
fn parallel(connections: i64) -> Site {
    let site = Site::new();
    site.set("chunk_size", "256KiB");
    site.set("connections_per_file", connections);
    site
}

/// Publishes `content` as [`AJNA`] on the Hub as a new commit (via the CDN) and points the
/// index at it.
fn serve(site: &Site, content: Vec<u8>) -> Blob {
    let blob = site.serve(AJNA, content);
    site.write_index(&[(AJNA, &blob)]);
    blob
}

/// A first version, published by a first successful sync.
fn published_v1(site: &Site) -> Blob {
    site.published(AJNA, data(1, SIZE))
}

/// A second version on the Hub and in the index, not yet synced.
fn serve_v2(site: &Site) -> Blob {
    serve(site, data(2, SIZE))
}

/// The request that got `fault`, and the one after it (on any server).
fn around<'a>(requests: &'a [Request], fault: &Fault) -> (&'a Request, &'a Request) {
    let at = requests.iter().position(|r| r.fault.as_ref() == Some(fault)).expect("the fault was served");
    (&requests[at], requests.get(at + 1).expect("a request after the fault"))
}

/// The resumed requests of the CDN: their `Range` start.
fn resumed_from(origin: &Origin) -> Vec<u64> {
    origin.requests_to(Route::Cdn).iter().filter_map(|r| r.range()).map(|(start, _)| start).collect()
}

// ---------------------------------------------------------------------------------------------
// Transient faults: the sync ends in a verified publish.

#[test]
fn resume_continues_after_connection_reset() {
    let site = Site::new();
    let blob = serve(&site, data(1, SIZE));
    site.origin().add(Rule::once(Route::Cdn, Fault::ResetAfter(600 * 1024)));
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    let starts = resumed_from(site.origin());
    assert!(starts.iter().any(|&s| s > 0 && s <= 600 * 1024), "no resume from the partial file: {starts:?}");
}

#[test]
fn stalled_transfer_is_abandoned_and_resumed() {
    let site = Site::new();
    let blob = serve(&site, data(1, SIZE));
    site.origin().add(Rule::once(Route::Cdn, Fault::StallAfter(400 * 1024, Duration::from_secs(30))));
    let run = site.sync();
    run.assert_ok();
    site.assert_published(AJNA, &blob);
    assert!(run.elapsed < Duration::from_secs(15), "a 1s stall timeout took {:?}", run.elapsed);
    let starts = resumed_from(site.origin());
    assert!(starts.iter().any(|&s| s > 0 && s <= 400 * 1024), "no resume after the stall: {starts:?}");
}

#[test]
fn slow_drip_below_the_stall_timeout_is_not_a_stall() {
    let site = Site::new();
    // 8 chunks 600 ms apart: 4.8 s in all, but never 1 s without a byte.
    let blob = serve(&site, data(1, 64 * 1024));
    let every = Duration::from_millis(600);
    site.origin().add(Rule::once(Route::Cdn, Fault::Drip { chunk: 8 * 1024, every }));
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    assert_eq!(site.origin().requests_to(Route::Cdn).len(), 1, "the slow transfer was abandoned");
}

#[test]
fn truncated_body_is_resumed() {
    let site = Site::new();
    let blob = serve(&site, data(1, SIZE));
    site.origin().add(Rule::once(Route::Cdn, Fault::Truncate(500 * 1024)));
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    let starts = resumed_from(site.origin());
    assert!(starts.iter().any(|&s| s > 0 && s <= 500 * 1024), "no resume after truncation: {starts:?}");
}

#[test]
fn partial_download_survives_a_failed_run_and_is_resumed() {
    let site = Site::new();
    let blob = serve(&site, data(1, SIZE));
    // Three answers break after 200 KiB each (600 KiB of the 1.5 MiB), then the CDN answers
    // only 503: the retries run out and the run fails with the bytes kept.
    site.origin().add(Rule::times(Route::Cdn, 3, Fault::ResetAfter(200 * 1024)));
    site.origin().add(Rule::always(Route::Cdn, Fault::status(503, &[])));
    site.sync().assert_refused(AJNA.id, &["503"]);
    let kept = std::fs::metadata(site.paths(AJNA, &blob).partial()).map_or(0, |m| m.len());
    let ranges: Vec<_> = site.origin().requests_to(Route::Cdn).iter().map(Request::range).collect();
    assert!(
        kept >= 600 * 1024,
        "{kept} bytes kept in the partial file after 3 answers of 200 KiB each; their ranges: {ranges:?}"
    );
    site.assert_not_published(AJNA, &blob);

    site.origin().heal();
    let before = site.origin().requests_to(Route::Cdn).len();
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    let next = &site.origin().requests_to(Route::Cdn)[before];
    assert_eq!(next.range(), Some((kept, None)), "the second run did not resume from the partial file");
}

#[test]
fn killed_sync_resumes_from_its_partial_file() {
    let site = Site::new();
    let blob = serve(&site, data(1, SIZE));
    site.origin().add(Rule::once(Route::Cdn, Fault::StallAfter(700 * 1024, Duration::from_secs(30))));
    // SIGKILL while the transfer stalls, before the 1 s stall timeout.
    let stalled_long_enough = || {
        let cdn = site.origin().requests_to(Route::Cdn);
        cdn.first().is_some_and(|r| r.at.elapsed() > Duration::from_millis(600))
    };
    site.sync_killed_when(&stalled_long_enough);
    site.assert_not_published(AJNA, &blob);

    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    let cdn = site.origin().requests_to(Route::Cdn);
    let start = cdn.get(1).and_then(Request::range).map(|(start, _)| start);
    assert!(start.is_some_and(|s| s > 0 && s <= 700 * 1024), "the run after the kill resumed from {start:?}");
}

#[test]
fn complete_partial_file_is_verified_without_downloading() {
    let site = Site::new();
    let blob = serve(&site, data(1, SIZE));
    // As after a crash between the last byte and the rename.
    let partial = site.paths(AJNA, &blob).partial();
    std::fs::create_dir_all(partial.parent().expect("blobs dir")).expect("blobs dir");
    std::fs::write(partial, &*blob.content).expect("partial file");
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    assert!(site.origin().requests_to(Route::Cdn).is_empty(), "downloaded a file already complete");
}

#[test]
fn corrupt_partial_file_is_discarded_and_fetched_again() {
    let site = Site::new();
    let blob = serve(&site, data(1, SIZE));
    let partial = site.paths(AJNA, &blob).partial();
    std::fs::create_dir_all(partial.parent().expect("blobs dir")).expect("blobs dir");
    std::fs::write(partial, data(99, 300 * 1024)).expect("partial file");
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
}

#[test]
fn bytes_corrupted_before_a_reset_are_fetched_again_from_zero() {
    let site = Site::new();
    let blob = serve(&site, data(1, SIZE));
    // The first answer has a wrong byte in what arrives before the reset; the resume is clean,
    // so only the hash of the whole file can tell.
    site.origin().add(Rule::once(Route::Cdn, Fault::FlipByte(1000).and(Fault::ResetAfter(500 * 1024))));
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    let cdn = site.origin().requests_to(Route::Cdn);
    assert!(cdn.iter().skip(1).any(|r| r.range().is_some()), "never resumed: {cdn:#?}");
    assert!(cdn.iter().skip(1).any(|r| r.range().is_none()), "never started over: {cdn:#?}");
}

#[test]
fn silent_hub_is_abandoned_after_the_stall_timeout() {
    let site = Site::new();
    let blob = serve(&site, data(1, SIZE));
    site.origin().add(Rule::once(Route::HubHead, Fault::Silent(Duration::from_secs(20))));
    let run = site.sync();
    run.assert_ok();
    site.assert_published(AJNA, &blob);
    assert!(run.elapsed < Duration::from_secs(8), "waited {:?} for a silent server", run.elapsed);
}

#[test]
fn resume_restarts_when_server_ignores_range() {
    let site = Site::new();
    let blob = serve(&site, data(1, SIZE));
    site.origin().add(Rule::once(Route::Cdn, Fault::ResetAfter(500 * 1024)));
    site.origin().add(Rule::once(Route::Cdn, Fault::IgnoreRange).ranged_only());
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    let ignored = site.origin().requests_to(Route::Cdn).iter().any(|r| r.fault == Some(Fault::IgnoreRange));
    assert!(ignored, "the engine never resumed, so the ignored range was not exercised");
}

#[test]
fn wrong_content_range_is_never_appended() {
    let site = Site::new();
    let blob = serve(&site, data(1, SIZE));
    site.origin().add(Rule::once(Route::Cdn, Fault::ResetAfter(500 * 1024)));
    site.origin().add(Rule::once(Route::Cdn, Fault::WrongContentRange).ranged_only());
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    let wrong =
        site.origin().requests_to(Route::Cdn).iter().any(|r| r.fault == Some(Fault::WrongContentRange));
    assert!(wrong, "the engine never resumed, so the wrong Content-Range was not exercised");
}

#[test]
fn first_cdn_requests_failing_with_5xx_are_retried() {
    let site = Site::new();
    let blob = serve(&site, data(1, SIZE));
    site.origin().add(Rule::times(Route::Cdn, 2, Fault::status(500, &[])));
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    assert!(site.origin().requests_to(Route::Cdn).len() >= 3);
}

#[test]
fn connection_reset_before_any_answer_is_retried() {
    let site = Site::new();
    let blob = serve(&site, data(1, SIZE));
    site.origin().add(Rule::times(Route::HubHead, 2, Fault::Hangup));
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    assert!(site.origin().requests_to(Route::HubHead).len() >= 3);
}

/// Serves the file with `fault` once on `route`, and checks that the retry came no sooner
/// than `at_least` after the refused request, and that the file was published.
fn assert_waits_after(route: Route, fault: Fault, at_least: Duration) {
    let site = Site::new();
    let blob = serve(&site, data(1, SIZE));
    site.origin().add(Rule::once(route, fault.clone()));
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    let requests = site.origin().requests();
    let (refused, next) = around(&requests, &fault);
    let waited = next.at - refused.at;
    assert!(waited >= at_least, "{fault:?} was not honoured: retried after {waited:?}");
}

#[test]
fn hub_503_is_retried_after_its_retry_after() {
    assert_waits_after(
        Route::HubHead,
        Fault::status(503, &[("Retry-After", "1")]),
        Duration::from_millis(900),
    );
}

#[test]
fn cdn_429_is_retried_after_its_retry_after() {
    assert_waits_after(Route::Cdn, Fault::status(429, &[("Retry-After", "1")]), Duration::from_millis(900));
}

#[test]
fn retry_after_as_an_http_date_is_honoured() {
    let when = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(2));
    assert_waits_after(
        Route::HubHead,
        Fault::status(503, &[("Retry-After", &when)]),
        Duration::from_millis(900),
    );
}

#[test]
fn hub_rate_limit_header_sets_the_wait() {
    let fault = Fault::status(
        429,
        &[
            ("RateLimit", "\"resolvers\";r=0;t=1"),
            ("RateLimit-Policy", "\"fixed window\";\"resolvers\";q=3000;w=300"),
        ],
    );
    assert_waits_after(Route::HubHead, fault, Duration::from_millis(900));
}

#[test]
fn expired_presigned_url_is_resolved_again() {
    let site = Site::new();
    let blob = serve(&site, data(1, SIZE));
    site.origin().add(Rule::once(Route::Cdn, Fault::Expired));
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    assert!(site.origin().requests_to(Route::HubHead).len() >= 2, "the URL was not resolved again");
    let cdn = site.origin().requests_to(Route::Cdn);
    assert!(cdn.len() >= 2 && cdn[0].target != cdn[1].target, "the expired URL was reused: {cdn:#?}");
}

#[test]
fn cdn_redirect_to_another_origin_is_followed_without_the_token() {
    let site = Site::new();
    let blob = serve(&site, data(1, SIZE));
    site.origin().add(Rule::always(Route::Cdn, Fault::RedirectTo(Host::Cdn2)));
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    // `sync` checks that no CDN request carried the token.
    assert!(!site.origin().requests_to(Route::Cdn2).is_empty(), "the second CDN was never asked");
}

#[test]
fn cdn_on_the_hubs_host_but_another_port_gets_no_token() {
    let site = Site::new();
    let blob = serve(&site, data(1, SIZE));
    site.origin().resolve_to(Host::Cdn2);
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    // `sync` checks that no CDN request carried the token.
    assert!(!site.origin().requests_to(Route::Cdn2).is_empty(), "the CDN on the Hub's host was never asked");
}

#[test]
fn relative_hub_redirect_keeps_the_token() {
    let site = Site::new();
    let blob = site.origin().publish(REPO, FILENAME, data(1, SIZE));
    site.origin().rename("test-org/old-name", REPO);
    let renamed = Model { repo: "test-org/old-name", ..AJNA };
    site.write_index(&[(renamed, &blob)]);
    site.sync().assert_ok();
    site.assert_published(renamed, &blob);
    let heads = site.origin().requests_to(Route::HubHead);
    let renamed =
        heads.iter().find(|r| r.path().starts_with(&format!("/{REPO}/"))).expect("followed the 307");
    assert_eq!(renamed.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
}

#[test]
fn file_kept_in_git_is_fetched_from_the_hub_itself() {
    let site = Site::new();
    let blob = site.origin().publish_in_git(REPO, FILENAME, data(1, 40 * 1024));
    site.write_index(&[(AJNA, &blob)]);
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    assert!(site.origin().requests_to(Route::Cdn).is_empty());
}

#[test]
fn file_kept_in_git_resumes_from_the_hub_with_the_token() {
    let site = Site::new();
    let blob = site.origin().publish_in_git(REPO, FILENAME, data(1, 800 * 1024));
    site.write_index(&[(AJNA, &blob)]);
    site.origin().add(Rule::once(Route::HubGet, Fault::ResetAfter(600 * 1024)));
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    let gets = site.origin().requests_to(Route::HubGet);
    let resumed = gets.iter().find(|r| r.range().is_some_and(|(start, _)| start > 0)).expect("a resume");
    assert_eq!(resumed.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
}

// ---------------------------------------------------------------------------------------------
// Hostile or permanent faults: a clear failure, and the version published before stays.

#[test]
fn one_failing_model_does_not_stop_the_others() {
    let site = Site::new();
    let good = site.origin().publish(ANAHATA.repo, ANAHATA.filename, data(3, SIZE));
    let bad = site.origin().publish(AJNA.repo, AJNA.filename, data(4, SIZE));
    site.write_index(&[(AJNA, &bad), (ANAHATA, &good)]);
    site.origin().add(Rule::always(Route::Cdn, Fault::FlipByte(7)).for_target(&bad.sha256));
    site.sync().assert_refused(AJNA.id, &["sha256", "checksum"]);
    site.assert_not_published(AJNA, &bad);
    site.assert_published(ANAHATA, &good);
}

#[test]
fn flipped_byte_fails_the_checksum_and_keeps_the_previous_version() {
    let site = Site::new();
    let v1 = published_v1(&site);
    let v2 = serve_v2(&site);
    site.origin().add(Rule::always(Route::Cdn, Fault::FlipByte(SIZE / 3)));
    site.sync().assert_refused(AJNA.id, &["sha256", "checksum", "hash", "digest"]);
    site.assert_not_published(AJNA, &v2);
    site.assert_published(AJNA, &v1);
}

#[test]
fn body_longer_than_the_index_size_is_refused() {
    let site = Site::new();
    let v1 = published_v1(&site);
    let v2 = serve_v2(&site);
    site.origin().add(Rule::always(Route::Cdn, Fault::Longer(4096)));
    site.sync().assert_refused(AJNA.id, &["size", "long", "bytes"]);
    site.assert_not_published(AJNA, &v2);
    site.assert_published(AJNA, &v1);
}

#[test]
fn body_shorter_than_the_index_size_is_refused() {
    let site = Site::new();
    let v1 = published_v1(&site);
    let v2 = serve_v2(&site);
    site.origin().add(Rule::always(Route::Cdn, Fault::Shorter(4096)));
    site.sync().assert_refused(AJNA.id, &["size", "short", "bytes"]);
    site.assert_not_published(AJNA, &v2);
    site.assert_published(AJNA, &v1);
}

#[test]
fn hub_size_disagreeing_with_the_index_fails_before_downloading() {
    let site = Site::new();
    let v1 = published_v1(&site);
    let v2 = serve_v2(&site);
    let hub_size = (SIZE + 1).to_string();
    site.origin().add(Rule::always(Route::HubHead, Fault::headers(&[("X-Linked-Size", &hub_size)])));
    let cdn_before = site.origin().requests_to(Route::Cdn).len();
    let run = site.sync();
    run.assert_refused(AJNA.id, &["size"]);
    for value in [SIZE.to_string(), hub_size] {
        assert!(run.out.contains(&value), "the output does not show {value}:\n{}", run.out);
    }
    assert_eq!(site.origin().requests_to(Route::Cdn).len(), cdn_before, "downloaded anyway");
    site.assert_not_published(AJNA, &v2);
    site.assert_published(AJNA, &v1);
}

#[test]
fn hub_sha256_disagreeing_with_the_index_fails_before_downloading() {
    let site = Site::new();
    let v1 = published_v1(&site);
    let v2 = serve_v2(&site);
    let hub_sha256 = sha256_hex(b"another file");
    let etag = format!("\"{hub_sha256}\"");
    site.origin().add(Rule::always(Route::HubHead, Fault::headers(&[("X-Linked-Etag", &etag)])));
    let cdn_before = site.origin().requests_to(Route::Cdn).len();
    let run = site.sync();
    run.assert_refused(AJNA.id, &["sha256", "etag", "checksum", "hash"]);
    for value in [&v2.sha256, &hub_sha256] {
        assert!(run.out.contains(value.as_str()), "the output does not show {value}:\n{}", run.out);
    }
    assert_eq!(site.origin().requests_to(Route::Cdn).len(), cdn_before, "downloaded anyway");
    site.assert_not_published(AJNA, &v2);
    site.assert_published(AJNA, &v1);
}

#[test]
fn redirect_loop_ends_in_an_error() {
    let site = Site::new();
    let v1 = published_v1(&site);
    let v2 = serve_v2(&site);
    site.origin().add(Rule::always(Route::Cdn, Fault::RedirectToSelf));
    site.sync().assert_refused(AJNA.id, &["redirect"]);
    site.assert_not_published(AJNA, &v2);
    site.assert_published(AJNA, &v1);
    let loops = site.origin().requests_to(Route::Cdn).len();
    assert!(loops <= 100, "{loops} requests to the looping CDN");
}

#[test]
fn https_to_http_redirect_is_refused() {
    let site = Site::with(Origin::start_tls(Some(TOKEN)));
    // Version 1 comes from the https Hub itself, which also proves `ca_file` works.
    let v1 = site.origin().publish_in_git(REPO, FILENAME, data(1, 64 * 1024));
    site.write_index(&[(AJNA, &v1)]);
    site.sync().assert_ok();
    site.assert_published(AJNA, &v1);
    // Version 2 is redirected to the plain-http CDN.
    let v2 = serve_v2(&site);
    let run = site.sync();
    run.assert_refused(
        AJNA.id,
        &["downgrade", "insecure", "https -> http", "https to http", "plain http", "refus"],
    );
    assert!(site.origin().requests_to(Route::Cdn).is_empty(), "the http CDN was asked");
    site.assert_not_published(AJNA, &v2);
    site.assert_published(AJNA, &v1);
}

#[test]
fn cdn_403_after_resolving_again_is_permanent() {
    let site = Site::new();
    let v1 = published_v1(&site);
    let v2 = serve_v2(&site);
    let heads_before = site.origin().requests_to(Route::HubHead).len();
    site.origin().add(Rule::always(Route::Cdn, Fault::Expired));
    site.sync().assert_refused(AJNA.id, &["403", "forbidden", "denied", "expired"]);
    let heads = site.origin().requests_to(Route::HubHead).len() - heads_before;
    assert!((2..=5).contains(&heads), "{heads} resolves: expected one more after the 403, then a stop");
    site.assert_not_published(AJNA, &v2);
    site.assert_published(AJNA, &v1);
}

#[test]
fn missing_file_404_is_permanent_and_not_retried() {
    let site = Site::new();
    let v1 = published_v1(&site);
    let v2 = serve_v2(&site);
    let heads_before = site.origin().requests_to(Route::HubHead).len();
    let fault =
        Fault::status(404, &[("X-Error-Code", "EntryNotFound"), ("X-Error-Message", "Entry not found")]);
    site.origin().add(Rule::always(Route::HubHead, fault));
    site.sync().assert_refused(AJNA.id, &["404", "not found", "EntryNotFound"]);
    assert_eq!(site.origin().requests_to(Route::HubHead).len() - heads_before, 1, "a 404 was retried");
    site.assert_not_published(AJNA, &v2);
    site.assert_published(AJNA, &v1);
}

#[test]
fn unauthorized_401_is_permanent_and_not_retried() {
    let site = Site::new();
    let v1 = published_v1(&site);
    let v2 = serve_v2(&site);
    let heads_before = site.origin().requests_to(Route::HubHead).len();
    let fault = Fault::status(401, &[("X-Error-Message", "Invalid credentials in Authorization header")]);
    site.origin().add(Rule::always(Route::HubHead, fault));
    site.sync().assert_refused(AJNA.id, &["401", "unauthorized", "credentials", "token"]);
    assert_eq!(site.origin().requests_to(Route::HubHead).len() - heads_before, 1, "a 401 was retried");
    site.assert_not_published(AJNA, &v2);
    site.assert_published(AJNA, &v1);
}

#[test]
fn retry_after_beyond_the_retry_budget_fails_at_once() {
    let site = Site::new();
    let v1 = published_v1(&site);
    let v2 = serve_v2(&site);
    site.origin().add(Rule::always(Route::HubHead, Fault::status(429, &[("Retry-After", "3600")])));
    let run = site.sync();
    run.assert_refused(AJNA.id, &["429", "too many requests"]);
    assert!(run.elapsed < Duration::from_secs(10), "waited {:?} for an hour-long Retry-After", run.elapsed);
    site.assert_not_published(AJNA, &v2);
    site.assert_published(AJNA, &v1);
}

#[test]
fn endless_5xx_fails_within_the_retry_budget_without_leaking_secrets() {
    let site = Site::new();
    let v1 = published_v1(&site);
    let v2 = serve_v2(&site);
    site.origin().add(Rule::always(Route::Cdn, Fault::status(503, &[])));
    let run = site.sync();
    // `sync` checks the output for the token and the presigned query.
    run.assert_refused(AJNA.id, &["503", "unavailable", "server error"]);
    assert!(run.elapsed < Duration::from_secs(20), "retrying took {:?}", run.elapsed);
    site.assert_not_published(AJNA, &v2);
    site.assert_published(AJNA, &v1);
}

// ---------------------------------------------------------------------------------------------
// The origin itself, through a raw socket: it must be right for the tests above to mean anything.

/// Sends `request` to the server at `base` (an `http://` URL) and reads the whole answer.
fn raw(base: &str, request: &str) -> (String, Vec<u8>) {
    let address = base.strip_prefix("http://").expect("http URL");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    (String::from_utf8_lossy(&answer[..split]).into_owned(), answer[split..].to_vec())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

#[test]
fn origin_resolves_to_the_cdn_and_serves_ranges() {
    let origin = Origin::start(Some(TOKEN));
    let blob = origin.publish(REPO, FILENAME, data(1, 1000));
    let resolve = format!("/{REPO}/resolve/main/{FILENAME}");

    let (head, body) = raw(origin.hub_url(), &format!("HEAD {resolve} HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
    assert!(body.is_empty());

    let request = format!("HEAD {resolve} HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    let (head, _) = raw(origin.hub_url(), &request);
    assert!(head.starts_with("HTTP/1.1 302 "), "{head}");
    assert_eq!(header(&head, "x-repo-commit"), Some(blob.commit.as_str()));
    assert_eq!(header(&head, "x-linked-etag"), Some(format!("\"{}\"", blob.sha256).as_str()));
    assert_eq!(header(&head, "x-linked-size"), Some("1000"));
    let location = url::Url::parse(header(&head, "location").expect("location")).expect("absolute");
    assert_eq!(location.host_str(), Some("127.0.0.2"));
    assert!(location.query().expect("presigned").contains(SIGNATURE_MARKER));

    let target = &location[url::Position::BeforePath..];
    let (head, body) = raw(origin.cdn_url(), &format!("GET {target} HTTP/1.1\r\nRange: bytes=100-\r\n\r\n"));
    assert!(head.starts_with("HTTP/1.1 206 "), "{head}");
    assert_eq!(header(&head, "content-range"), Some("bytes 100-999/1000"));
    assert_eq!(body, blob.content[100..]);
    let (head, _) = raw(origin.cdn_url(), &format!("GET {target} HTTP/1.1\r\nRange: bytes=1000-\r\n\r\n"));
    assert!(head.starts_with("HTTP/1.1 416 "), "{head}");

    let requests = origin.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[0].header("authorization"), None);
    assert_eq!(requests[1].header("AUTHORIZATION"), Some(format!("Bearer {TOKEN}").as_str()));
    assert_eq!(requests[2].range(), Some((100, None)));
}

#[test]
fn origin_rules_apply_in_order_then_run_out() {
    let origin = Origin::start(None);
    let blob = origin.publish(REPO, FILENAME, data(1, 1000));
    let target = format!("/blobs/{}?X-Amz-Signature=x", blob.sha256);
    let get = |range: &str| raw(origin.cdn_url(), &format!("GET {target} HTTP/1.1\r\n{range}\r\n"));
    origin.add(Rule::once(Route::Cdn, Fault::Truncate(10)));
    origin.add(Rule::once(Route::Cdn, Fault::IgnoreRange).ranged_only());
    origin.add(Rule::once(Route::Cdn, Fault::WrongContentRange).ranged_only());
    origin.add(Rule::times(Route::Cdn, 2, Fault::FlipByte(5)));

    let (head, body) = get("");
    assert_eq!((header(&head, "content-length"), body.len()), (Some("1000"), 10), "truncated");
    let (head, body) = get("Range: bytes=10-\r\n");
    assert!(head.starts_with("HTTP/1.1 200 "), "range ignored: {head}");
    assert_eq!(body, *blob.content);
    let (head, body) = get("Range: bytes=10-\r\n");
    assert_eq!(header(&head, "content-range"), Some("bytes 505-999/1000"), "wrong range");
    assert_eq!(body, blob.content[505..]);
    let (_, body) = get("");
    assert_eq!((body.len(), body[5], body[6]), (1000, !blob.content[5], blob.content[6]), "flipped");
    let (_, body) = get("");
    assert_ne!(body, *blob.content, "the flip rule holds for two requests");
    let (_, body) = get("");
    assert_eq!(body, *blob.content, "the rules ran out");

    origin.add(Rule::once(Route::HubHead, Fault::status(503, &[("Retry-After", "1")])));
    let resolve = format!("HEAD /{REPO}/resolve/main/{FILENAME} HTTP/1.1\r\n\r\n");
    let (head, _) = raw(origin.hub_url(), &resolve);
    assert!(head.starts_with("HTTP/1.1 503 ") && header(&head, "retry-after") == Some("1"), "{head}");
    let (head, _) = raw(origin.hub_url(), &resolve);
    assert!(head.starts_with("HTTP/1.1 302 "), "{head}");
}

#[test]
fn origin_tls_hub_is_trusted_through_its_ca() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;

    let origin = Origin::start_tls(None);
    origin.publish_in_git(REPO, FILENAME, data(1, 10));
    let address = origin.hub_url().strip_prefix("https://").expect("https hub").to_owned();
    let pem = origin.ca_pem().expect("CA").to_owned();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let head = runtime.block_on(async move {
        let mut roots = rustls::RootCertStore::empty();
        let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM");
        roots.add(der).expect("CA added");
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(&address).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
        let mut tls = connector.connect(name, tcp).await.expect("TLS handshake with the test CA");
        let request = format!("HEAD /{REPO}/resolve/main/{FILENAME} HTTP/1.1\r\n\r\n");
        tls.write_all(request.as_bytes()).await.expect("send");
        let mut answer = Vec::new();
        let _ = tls.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    });
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(header(&head, "content-length"), Some("10"));
    assert!(header(&head, "etag").is_some_and(|etag| etag.len() == 42), "git sha1 etag: {head}");
}

// --- Parallel ranged downloads (chunk_size, connections_per_file) ----------------------------

/// The 256 KiB chunks of the parallel download of `blob` that the sidecar records as wholly on
/// disk (it records byte ranges, `"written": [[start, end], ...]`).
fn chunks_done(site: &Site, blob: &Blob) -> Vec<u64> {
    let chunk = 256 * 1024;
    let ranges: Vec<(u64, u64)> = std::fs::read(site.paths(AJNA, blob).sidecar())
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|v| serde_json::from_value(v["written"].clone()).ok())
        .unwrap_or_default();
    ranges.iter().flat_map(|&(start, end)| start.div_ceil(chunk)..end / chunk).collect()
}

#[test]
fn large_file_is_fetched_in_parallel_chunks_of_exact_ranges() {
    let site = parallel(3);
    let blob = serve(&site, data(1, SIZE));
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    let mut ranges: Vec<(u64, Option<u64>)> =
        site.origin().requests_to(Route::Cdn).iter().filter_map(Request::range).collect();
    ranges.sort_unstable();
    let chunk = 256 * 1024;
    let expected: Vec<(u64, Option<u64>)> =
        (0..6).map(|i| (i * chunk, Some(i * chunk + chunk - 1))).collect();
    assert_eq!(ranges, expected, "one request per chunk, each for exactly its bytes");
}

#[test]
fn slow_origin_gets_more_connections_at_once() {
    // 32 KiB per 20 ms per connection: one connection needs ~160 ms per 256 KiB chunk, so a
    // download over one connection starts its requests ~160 ms apart.
    let site = parallel(4);
    let blob = serve(&site, data(1, SIZE));
    site.origin()
        .add(Rule::always(Route::Cdn, Fault::Drip { chunk: 32 * 1024, every: Duration::from_millis(20) }));
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    let starts: Vec<Instant> = site.origin().requests_to(Route::Cdn).iter().map(|r| r.at).collect();
    let closest = starts.windows(2).map(|w| w[1] - w[0]).min().expect("several requests");
    assert!(
        closest < Duration::from_millis(60),
        "the ranges were fetched one after another (closest starts {closest:?} apart)"
    );
}

#[test]
fn parallel_chunk_broken_mid_way_is_fetched_again_and_the_file_verified() {
    let site = parallel(3);
    let blob = serve(&site, data(1, SIZE));
    site.origin().add(Rule::times(Route::Cdn, 2, Fault::ResetAfter(100 * 1024)).ranged_only());
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    assert!(site.origin().requests_to(Route::Cdn).len() >= 8, "the broken chunks were not asked for again");
}

#[test]
fn parallel_download_falls_back_to_one_stream_when_ranges_are_ignored() {
    let site = parallel(3);
    let blob = serve(&site, data(1, SIZE));
    site.origin().add(Rule::always(Route::Cdn, Fault::IgnoreRange));
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    let cdn = site.origin().requests_to(Route::Cdn);
    assert!(cdn.iter().any(|r| r.range().is_none()), "never fell back to a plain GET: {cdn:#?}");
}

#[test]
fn parallel_download_with_a_flipped_byte_keeps_the_previous_version() {
    let site = parallel(3);
    let v1 = published_v1(&site);
    let v2 = serve_v2(&site);
    site.origin().add(Rule::always(Route::Cdn, Fault::FlipByte(1000)).for_target(&v2.sha256));
    site.sync().assert_refused(AJNA.id, &["checksum", "sha256"]);
    site.assert_not_published(AJNA, &v2);
    assert!(chunks_done(&site, &v2).is_empty(), "a sidecar of wrong bytes was kept");
    assert!(!site.paths(AJNA, &v2).partial().exists(), "a partial file of wrong bytes was kept");
    // The stored name still resolves to the verified first version.
    let stored = site.stored(AJNA);
    assert_eq!(sha256_hex(&std::fs::read(stored).expect("stored file")), v1.sha256);
}

#[test]
fn killed_parallel_download_resumes_without_fetching_finished_chunks_again() {
    let site = parallel(2);
    let blob = serve(&site, data(1, SIZE));
    site.origin()
        .add(Rule::always(Route::Cdn, Fault::Drip { chunk: 32 * 1024, every: Duration::from_millis(20) }));
    let two_chunks_done = || chunks_done(&site, &blob).len() >= 2;
    let run = site.sync_killed_when(&two_chunks_done);
    let done = chunks_done(&site, &blob);
    assert!(done.len() >= 2 && done.len() < 6, "chunks recorded at the kill: {done:?}\n{}", run.out);
    let before = site.origin().requests_to(Route::Cdn).len();

    site.origin().heal();
    site.sync().assert_ok();
    site.assert_published(AJNA, &blob);
    let chunk = 256 * 1024;
    let again: Vec<u64> = site.origin().requests_to(Route::Cdn)[before..]
        .iter()
        .filter_map(|r| r.range().map(|(start, _)| start / chunk))
        .collect();
    for i in &done {
        assert!(!again.contains(i), "chunk {i} was on disk but fetched again: {again:?}");
    }
    assert!(!again.is_empty(), "the second run fetched nothing");
}
