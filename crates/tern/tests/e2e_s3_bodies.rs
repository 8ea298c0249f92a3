//! Bodies in S3 end to end (`bodies.location = "s3"`), on both metadata stores, against the
//! S3-compatible server scripts/s3/run.sh starts (S3Proxy): large messages go to the bucket
//! (multipart past one part) and come back byte for byte over POP3, small ones stay beside
//! their metadata, a deletion removes the object, the collection task removes an object no
//! message names, and a bucket that does not answer costs large messages a temporary error
//! while small ones are still delivered.

#[macro_use]
mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::Value;
use tern::config::BodiesLocation;
use tern_store::blob_store::s3::{S3BlobStore, S3Options};
use tern_store::blob_store::BlobStore;
use tern_store::BlobId;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap()
}

/// Points a test configuration at the test bucket, under `options`' prefix.
fn use_s3(c: &mut tern::config::Config, options: &S3Options) {
    c.bodies.location = BodiesLocation::S3;
    let s3 = &mut c.bodies.s3;
    s3.endpoint = options.endpoint.clone();
    s3.bucket = options.bucket.clone();
    s3.prefix = options.prefix.clone();
    s3.access_key_id = options.credentials.as_ref().map(|c| c.0.clone());
    s3.secret_access_key = options.credentials.as_ref().map(|c| c.1.clone());
    s3.part_size_mib = 5;
}

fn objects(s: &TestServer, bucket: &S3BlobStore) -> Vec<BlobId> {
    s.block_on(bucket.list().map(|r| r.unwrap()).collect::<Vec<_>>())
}

/// A message of about `size` octets whose lines differ, so that a misplaced part shows.
fn sized_message(subject: &str, size: usize) -> Vec<u8> {
    let mut body = String::with_capacity(size + 100);
    let mut n = 0u64;
    while body.len() < size {
        body.push_str(&format!("line {n:08} of {subject} .. 0123456789abcdef\r\n"));
        n += 1;
    }
    message(subject, &body)
}

fn large_bodies_live_in_the_bucket(b: Backend) {
    let options = S3Options::test_server();
    let bucket = S3BlobStore::new(options.clone()).unwrap();
    let s = TestServer::start_with(b, |c| use_s3(c, &options));
    let alice = s.user("alice");
    let small = message("small", "hello\r\n");
    let large = sized_message("large", 3 * 1024 * 1024);
    let huge = sized_message("huge", 12 * 1024 * 1024);
    for m in [&small, &large, &huge] {
        s.deliver(&[&alice], m);
    }
    assert_eq!(
        objects(&s, &bucket).len(),
        2,
        "the two large bodies, one object each; the small one beside its metadata"
    );

    let mut c = s.login("alice");
    let sizes: Vec<u64> = c.list().into_iter().map(|(_, size)| size).collect();
    assert_eq!(sizes.len(), 3);
    for (n, sent) in [(1, &small), (2, &large), (3, &huge)] {
        let got = c.retr(n);
        // Each local copy starts with the lines the server adds (Return-Path, Delivered-To,
        // Received): the message sent follows them whole.
        assert!(got.ends_with(sent), "message {n} differs");
        assert_eq!(got.len() as u64, sizes[n - 1], "LIST size of message {n}");
    }
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    assert!(c.quit().starts_with("+OK"));
    assert_eq!(
        objects(&s, &bucket).len(),
        1,
        "the deleted message's object is removed"
    );
    let mut c = s.login("alice");
    assert_eq!(c.stat().0, 2);
    assert!(c.retr(2).ends_with(&huge));
    c.quit();
}

fn the_collector_removes_objects_no_message_names(b: Backend) {
    let options = S3Options::test_server();
    let bucket = S3BlobStore::new(options.clone()).unwrap();
    let s = TestServer::start_with(b, |c| use_s3(c, &options));
    let alice = s.user("alice");
    let large = sized_message("kept", 600_000);
    s.deliver(&[&alice], &large);
    // An object whose node stopped after the upload and before the metadata named it.
    let orphan = BlobId(tern_store::IdGenerator::new().next_id().uuid());
    s.block_on(async {
        let mut upload = bucket.begin(orphan).await.unwrap();
        upload.write(&[b'o'; 700_000]).await.unwrap();
        upload.finish().await.unwrap();
    });
    assert_eq!(objects(&s, &bucket).len(), 2);
    let r = s.admin("DELETE", "/blobs?scope=unreferenced&graceMinutes=0", None);
    assert_eq!(r.status, 201, "{}", r.body);
    let id = json(&r.body)["taskId"].as_str().unwrap().to_string();
    let done = json(&s.admin_ok("GET", &format!("/tasks/{id}/await?timeout=60s"), None));
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["additionalInformation"]["errorCount"], 0, "{done}");
    assert_eq!(done["additionalInformation"]["gcedBlobCount"], 1, "{done}");
    let left = objects(&s, &bucket);
    assert_eq!(left.len(), 1);
    assert_ne!(left[0], orphan);
    let mut c = s.login("alice");
    assert!(c.retr(1).ends_with(&large), "the referenced body is kept");
    c.quit();
}

fn a_bucket_that_does_not_answer_costs_large_messages_a_temporary_error(b: Backend) {
    // Nothing listens there: every request fails at once, retried no more than once.
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", nowhere.local_addr().unwrap());
    drop(nowhere);
    let s = TestServer::start_with(b, |c| {
        use_s3(c, &S3Options::test_server());
        c.bodies.s3.endpoint = Some(endpoint);
        c.bodies.s3.max_retries = 1;
        c.bodies.s3.retry_timeout_secs = 2;
    });
    let alice = s.user("alice");
    let mut c = s.smtp();
    c.ehlo();
    let (code, text) = c.send_mail(
        "sender@remote.test",
        &[&alice],
        &sized_message("large", 1024 * 1024),
    );
    assert_eq!(code, 451, "{text}");
    // The session and the server go on: a small message is stored beside its metadata.
    let (code, text) = c.send_mail("sender@remote.test", &[&alice], &message("small", "hi\r\n"));
    assert_eq!(code, 250, "{text}");
    c.quit();
    assert_eq!(s.login("alice").stat().0, 1);
}

fn bodies_stored_before_the_switch_to_s3_stay_readable(b: Backend) {
    let options = S3Options::test_server();
    let bucket = S3BlobStore::new(options.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), b);
    let before = sized_message("before", 2 * 1024 * 1024);
    let mut s = TestServer::start_config(config.clone(), None);
    s.admin_ok("PUT", &format!("/domains/{DOMAIN}"), None);
    let alice = s.user("alice");
    s.deliver(&[&alice], &before);
    s.stop();
    drop(s);

    let mut switched = config;
    use_s3(&mut switched, &options);
    let s = TestServer::start_config(switched, None).owning_keyspace();
    let after = sized_message("after", 2 * 1024 * 1024);
    s.deliver(&[&alice], &after);
    assert_eq!(
        objects(&s, &bucket).len(),
        1,
        "only the new body is in the bucket"
    );
    let mut c = s.login("alice");
    assert!(
        c.retr(1).ends_with(&before),
        "the body from before the switch"
    );
    assert!(c.retr(2).ends_with(&after));
    assert!(c.cmd("DELE 1").starts_with("+OK"));
    assert!(c.cmd("DELE 2").starts_with("+OK"));
    assert!(c.quit().starts_with("+OK"));
    assert!(objects(&s, &bucket).is_empty());
    if !b.is_cassandra() {
        let files = walk(&dir.path().join("blobs"));
        assert!(
            files.is_empty(),
            "the old body's file is removed too: {files:?}"
        );
    }
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Both metadata stores, each with its bodies in S3: the S3 server is needed by both, so both
/// are ignored by a plain `cargo test` and run by `scripts/test`.
macro_rules! with_s3_on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[test]
                #[ignore = "needs S3: run scripts/test"]
                fn $name() { super::$name(super::Backend::Embedded) }
            )*
        }
        mod cassandra {
            $(
                #[test]
                #[ignore = "needs Cassandra and S3: run scripts/test"]
                fn $name() { super::$name(super::Backend::Cassandra) }
            )*
        }
    };
}

with_s3_on_both_backends!(
    large_bodies_live_in_the_bucket,
    the_collector_removes_objects_no_message_names,
    a_bucket_that_does_not_answer_costs_large_messages_a_temporary_error,
    bodies_stored_before_the_switch_to_s3_stay_readable,
);
