//! The fault matrix: every fault the test origin (`origin.rs`) can inject, one after the other,
//! against `models-fetch sync` updating a published model from version 1 to version 2. After
//! each one the end state is checked:
//!
//! - a transient fault (resets, stalls, drips, 429/5xx with `Retry-After` or `RateLimit`,
//!   truncation, ignored or wrong ranges on a resume, an expired presigned URL, a redirect to
//!   another origin, a huge header once) ends in a verified publish of version 2 and no temp
//!   file left;
//! - a hostile or permanent fault (wrong bytes, wrong sizes, redirect loops, https -> http, a
//!   redirect to `file://`, 401/404, a Hub that disagrees with the index, a hostile commit id,
//!   retries that never end) ends in a non-zero exit whose stderr names the model and the
//!   reason, version 1 still published and intact, nothing of version 2 at a published name,
//!   and at most a partial file that is a true prefix of version 2 (kept for the resume);
//! - in every case: no published name holds bytes whose sha256 differs from the index
//!   ([`Site::violations`]), nothing was written outside the cache and the store, the token and
//!   the presigned query are in no output, and no CDN got `Authorization`.
//!
//! Every case runs even when one fails; the test fails at the end listing every failed case.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use crate::fixture::{AJNA, Site, TOKEN, data, sha256_hex};
use crate::origin::{Blob, Fault, Host, Origin, Route, Rule};

/// The size of both versions: several reads, quick.
const SIZE: usize = 512 * 1024;

/// How a case must end.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Version 2 verified and published.
    Publish,
    /// One of these exit statuses, and a stderr line naming the model and one of the reasons.
    Fail(&'static [i32], &'static [&'static str]),
}

/// One fault kind.
struct Case {
    name: &'static str,
    /// The Hub over https (version 1 then comes from the Hub itself, in git).
    tls: bool,
    /// The faults, given version 2.
    rules: fn(&Blob) -> Vec<Rule>,
    expect: Expect,
    /// Longest the failing or succeeding run may take.
    limit: Duration,
}

const TRANSIENT_LIMIT: Duration = Duration::from_secs(20);

fn huge() -> String {
    "x".repeat(1 << 20)
}

fn many_headers() -> Vec<(String, String)> {
    (0..500).map(|i| (format!("X-Pad-{i}"), "y".repeat(64))).collect()
}

fn transient_cases() -> Vec<Case> {
    let case = |name, rules: fn(&Blob) -> Vec<Rule>| Case {
        name,
        tls: false,
        rules,
        expect: Expect::Publish,
        limit: TRANSIENT_LIMIT,
    };
    vec![
        case("reset_after_n_bytes", |_| vec![Rule::once(Route::Cdn, Fault::ResetAfter(150 * 1024))]),
        case("reset_before_any_answer", |_| vec![Rule::times(Route::HubHead, 2, Fault::Hangup)]),
        case("stall_mid_body", |_| {
            vec![Rule::once(Route::Cdn, Fault::StallAfter(100 * 1024, Duration::from_secs(30)))]
        }),
        case("silent_hub", |_| vec![Rule::once(Route::HubHead, Fault::Silent(Duration::from_secs(20)))]),
        case("slow_drip", |_| {
            vec![Rule::once(Route::Cdn, Fault::Drip { chunk: 64 * 1024, every: Duration::from_millis(100) })]
        }),
        case("cdn_429_with_retry_after", |_| {
            vec![Rule::once(Route::Cdn, Fault::status(429, &[("Retry-After", "1")]))]
        }),
        case("hub_503_with_retry_after", |_| {
            vec![Rule::once(Route::HubHead, Fault::status(503, &[("Retry-After", "1")]))]
        }),
        case("hub_429_with_ratelimit", |_| {
            vec![Rule::once(Route::HubHead, Fault::status(429, &[("RateLimit", "\"resolvers\";r=0;t=1")]))]
        }),
        case("cdn_5xx_twice", |_| vec![Rule::times(Route::Cdn, 2, Fault::status(502, &[]))]),
        case("truncated_body", |_| vec![Rule::once(Route::Cdn, Fault::Truncate(200 * 1024))]),
        case("ignore_range_on_resume", |_| {
            vec![
                Rule::once(Route::Cdn, Fault::ResetAfter(150 * 1024)),
                Rule::once(Route::Cdn, Fault::IgnoreRange).ranged_only(),
            ]
        }),
        case("wrong_content_range_on_resume", |_| {
            vec![
                Rule::once(Route::Cdn, Fault::ResetAfter(150 * 1024)),
                Rule::once(Route::Cdn, Fault::WrongContentRange).ranged_only(),
            ]
        }),
        case("flipped_byte_before_a_reset", |_| {
            vec![Rule::once(Route::Cdn, Fault::FlipByte(1000).and(Fault::ResetAfter(200 * 1024)))]
        }),
        case("presigned_url_expired_once", |_| vec![Rule::once(Route::Cdn, Fault::Expired)]),
        case("redirect_to_another_origin", |_| vec![Rule::always(Route::Cdn, Fault::RedirectTo(Host::Cdn2))]),
        case("huge_header_once", |_| vec![Rule::once(Route::Cdn, Fault::headers(&[("X-Huge", &huge())]))]),
        case("many_headers_once", |_| vec![Rule::once(Route::HubHead, Fault::Headers(many_headers()))]),
    ]
}

fn hostile_cases() -> Vec<Case> {
    const DATA: &[i32] = &[65];
    const TEMP: &[i32] = &[75];
    let case = |name, expect, rules: fn(&Blob) -> Vec<Rule>| Case {
        name,
        tls: false,
        rules,
        expect,
        limit: TRANSIENT_LIMIT,
    };
    vec![
        case("flipped_byte", Expect::Fail(DATA, &["checksum", "sha256"]), |_| {
            vec![Rule::always(Route::Cdn, Fault::FlipByte(SIZE / 3))]
        }),
        case("over_long_body", Expect::Fail(DATA, &["size", "bytes"]), |_| {
            vec![Rule::always(Route::Cdn, Fault::Longer(4096))]
        }),
        case("short_body", Expect::Fail(DATA, &["size", "bytes"]), |_| {
            vec![Rule::always(Route::Cdn, Fault::Shorter(4096))]
        }),
        case("redirect_loop_on_the_cdn", Expect::Fail(DATA, &["redirect"]), |_| {
            vec![Rule::always(Route::Cdn, Fault::RedirectToSelf)]
        }),
        case("redirect_loop_on_the_hub", Expect::Fail(DATA, &["redirect"]), |_| {
            vec![Rule::always(Route::HubHead, Fault::RedirectToSelf)]
        }),
        case("redirect_to_file_url", Expect::Fail(DATA, &["file", "scheme"]), |_| {
            let commit = "0123456789abcdef0123456789abcdef01234567";
            let headers = [("Location", "file:///etc/passwd"), ("X-Repo-Commit", commit)];
            vec![Rule::always(Route::HubHead, Fault::status(302, &headers))]
        }),
        Case {
            name: "https_to_http_downgrade",
            tls: true,
            rules: |_| vec![],
            expect: Expect::Fail(DATA, &["https to http", "refused"]),
            limit: TRANSIENT_LIMIT,
        },
        case("presigned_url_expired_always", Expect::Fail(DATA, &["403", "expired"]), |_| {
            vec![Rule::always(Route::Cdn, Fault::Expired)]
        }),
        case("hub_404", Expect::Fail(DATA, &["404", "not found"]), |_| {
            vec![Rule::always(Route::HubHead, Fault::status(404, &[("X-Error-Code", "EntryNotFound")]))]
        }),
        case("hub_401", Expect::Fail(DATA, &["401", "unauthorized"]), |_| {
            vec![Rule::always(Route::HubHead, Fault::status(401, &[]))]
        }),
        case("hub_size_differs_from_the_index", Expect::Fail(DATA, &["size"]), |_| {
            vec![Rule::always(Route::HubHead, Fault::headers(&[("X-Linked-Size", "12345")]))]
        }),
        case("hub_sha256_differs_from_the_index", Expect::Fail(DATA, &["sha256", "etag"]), |_| {
            let etag = format!("\"{}\"", sha256_hex(b"another file"));
            vec![Rule::always(Route::HubHead, Fault::headers(&[("X-Linked-Etag", &etag)]))]
        }),
        case("hub_commit_with_dot_dot_segments", Expect::Fail(DATA, &["commit"]), |_| {
            vec![Rule::always(Route::HubHead, Fault::headers(&[("X-Repo-Commit", "../../../escape")]))]
        }),
        case("retry_after_beyond_the_budget", Expect::Fail(TEMP, &["429"]), |_| {
            vec![Rule::always(Route::HubHead, Fault::status(429, &[("Retry-After", "3600")]))]
        }),
        case("endless_5xx", Expect::Fail(TEMP, &["503"]), |_| {
            vec![Rule::always(Route::Cdn, Fault::status(503, &[]))]
        }),
        // Resets after the headers, before any byte: no answer advances the file (resets that
        // do advance it finish the file: `slow::resets_every_100_kib_...`).
        case("endless_resets", Expect::Fail(TEMP, &["connection", "broke", "reset"]), |_| {
            vec![Rule::always(Route::Cdn, Fault::ResetAfter(0))]
        }),
        case("huge_header_always", Expect::Fail(TEMP, &["header", "too large", "request failed"]), |_| {
            vec![Rule::always(Route::Cdn, Fault::headers(&[("X-Huge", &huge())]))]
        }),
        case("many_headers_always", Expect::Fail(TEMP, &["header", "request failed"]), |_| {
            vec![Rule::always(Route::HubHead, Fault::Headers(many_headers()))]
        }),
    ]
}

/// Runs one case; panics (with the reason) when its end state is wrong.
fn run_case(case: &Case) {
    let site = if case.tls { Site::with(Origin::start_tls(Some(TOKEN))) } else { Site::new() };
    let v1 = if case.tls {
        site.origin().publish_in_git(AJNA.repo, AJNA.filename, data(1, SIZE))
    } else {
        site.serve(AJNA, data(1, SIZE))
    };
    site.write_index(&[(AJNA, &v1)]);
    site.sync().assert_ok();
    site.assert_published(AJNA, &v1);

    let v2 = site.serve(AJNA, data(2, SIZE));
    site.write_index(&[(AJNA, &v2)]);
    for rule in (case.rules)(&v2) {
        site.origin().add(rule);
    }
    let started = Instant::now();
    let run = site.sync();
    let took = started.elapsed();
    assert!(took < case.limit, "took {took:?}, more than {:?}:\n{}", case.limit, run.out);
    let expected = ["cache", "store", "token", "index.json", "config.toml", "ca.pem"];
    let outside: Vec<String> = std::fs::read_dir(site.dir())
        .expect("site dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !expected.contains(&name.as_str()))
        .collect();
    assert!(outside.is_empty(), "written outside the cache and the store: {outside:?}");
    site.assert_invariant("after the run");
    match case.expect {
        Expect::Publish => {
            run.assert_ok();
            site.assert_published(AJNA, &v2);
            let temp = site.temp_files();
            assert!(temp.is_empty(), "temp files left after a publish: {temp:?}");
        }
        Expect::Fail(codes, reasons) => {
            run.assert_failed(codes, AJNA.id, reasons);
            site.assert_not_published(AJNA, &v2);
            site.assert_kept(AJNA, &v1);
            let partial = site.paths(AJNA, &v2).partial();
            for path in site.temp_files() {
                assert_eq!(path, partial, "a temp file other than the partial file is left");
                let kept = std::fs::read(&path).expect("partial file");
                assert!(
                    v2.content.starts_with(&kept),
                    "the partial file kept for a resume ({} bytes) is not a prefix of version 2",
                    kept.len()
                );
            }
        }
    }
}

/// Runs every case of `cases`, then fails listing each case that failed.
fn run_matrix(cases: Vec<Case>) {
    let mut failed = Vec::new();
    let mut ran = 0;
    for case in &cases {
        ran += 1;
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| run_case(case)));
        eprintln!(
            "matrix: {} {} in {:?}",
            case.name,
            if result.is_ok() { "ok" } else { "FAILED" },
            started.elapsed()
        );
        if let Err(panic) = result {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            failed.push(format!("{}: {message}", case.name));
        }
    }
    assert!(ran > 0, "no case ran");
    assert!(failed.is_empty(), "{} of {ran} fault cases failed:\n\n{}", failed.len(), failed.join("\n\n"));
}

#[test]
fn matrix_transient_faults_end_in_a_verified_publish() {
    run_matrix(transient_cases());
}

#[test]
fn matrix_hostile_faults_end_in_a_clear_error_and_keep_the_old_version() {
    run_matrix(hostile_cases());
}
