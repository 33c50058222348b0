//! Faults of the machine under the store: a full disk. Acknowledged writes are stored, whatever
//! happened to the writes before them.

use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::json;

use crate::helpers::{Backend, TestAppBuilder, assert_error, send, skip};

/// A small tmpfs mounted for one test, unmounted when dropped. Mounting needs root: without it
/// the test is skipped with a printed reason, except in CI, where it must run.
struct SmallDisk {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().to_path_buf();
        let mounted = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .is_ok_and(|status| status.success());
        if !mounted {
            skip("mounting a tmpfs needs root (mount -t tmpfs)");
            return None;
        }
        Some(Self { _dir: dir, path })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

fn fill(path: &Path, bytes: usize) {
    std::fs::write(path, vec![0u8; bytes]).unwrap();
}

/// Before: after the first write that met the full disk, PUTs answered 200 while nothing reached
/// the file (the writer connection was left inside a transaction no COMMIT ended), and the rows
/// were gone after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_and_loses_no_acknowledged_write() {
    let Some(disk) = SmallDisk::mount("3m") else {
        return;
    };
    let data = disk.path.join("data");
    let app = TestAppBuilder::new(&Backend::Sqlite)
        .await
        .data_dir(&data)
        .start()
        .await;
    let boot = app.bootstrap().await;
    let token = app.access_token(&boot.api_key, &boot.api_secret).await;
    // Ballast, removed later to give space back.
    let ballast = disk.path.join("ballast");
    fill(&ballast, 512 * 1024);

    let mut acknowledged = Vec::new();
    let mut failures = 0;
    let put = |n: usize| {
        let (app, token) = (&app, token.clone());
        async move {
            let metadata: serde_json::Map<String, serde_json::Value> = (0..20)
                .map(|i| (format!("k{i}"), json!("v".repeat(400))))
                .collect();
            send(
                app,
                Method::PUT,
                &token,
                &format!("/api/v0/api-keys/key-{n}"),
                Some(json!({"kind": "test", "status": "enabled", "metadata": metadata})),
            )
            .await
        }
    };
    let mut n = 0;
    // Until the disk is full, then fifty more.
    while failures < 50 {
        n += 1;
        assert!(n < 5_000, "the disk never filled");
        let response = put(n).await;
        if response.status() == 200 {
            acknowledged.push(n);
            let stored = app
                .get_as(&token, &format!("/api/v0/api-keys/key-{n}"))
                .await;
            assert_eq!(stored.status(), 200, "an acknowledged key reads back");
        } else {
            failures += 1;
            assert_error(response, 503, "E_UNAVAILABLE").await;
        }
    }
    let readiness = app.get("/readyz").await;
    assert_eq!(readiness.status(), 503, "not ready while writes fail");

    // Space comes back: writes succeed again without a restart.
    std::fs::remove_file(&ballast).unwrap();
    n += 1;
    let response = put(n).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    acknowledged.push(n);
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.stop().await;

    // Every acknowledged key is there after a restart.
    let app = TestAppBuilder::new(&Backend::Sqlite)
        .await
        .data_dir(&data)
        .start()
        .await;
    let token = app.access_token(&boot.api_key, &boot.api_secret).await;
    for n in &acknowledged {
        let stored = app
            .get_as(&token, &format!("/api/v0/api-keys/key-{n}"))
            .await;
        assert_eq!(stored.status(), 200, "key-{n} was acknowledged");
    }
    let list: serde_json::Value = app
        .get_as(&token, "/api/v0/api-keys?limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["count"],
        acknowledged.len() + 1,
        "the bootstrap key and the acknowledged"
    );
    app.stop().await;
}

/// Before: deleting `keyplane.db` while the server ran left it answering 200 to writes (into a
/// file nobody would open again) and `/readyz` 200; on restart it silently began a new, empty
/// database, and `keyplane bootstrap` succeeded again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_database_file_refuses_writes_and_a_restart() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().join("data");
    let app = TestAppBuilder::new(&Backend::Sqlite)
        .await
        .data_dir(&data)
        .start()
        .await;
    let boot = app.bootstrap().await;
    let token = app.access_token(&boot.api_key, &boot.api_secret).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(data.join(format!("keyplane.db{suffix}")));
    }
    let put = send(
        &app,
        Method::PUT,
        &token,
        "/api/v0/api-keys/after-delete",
        Some(json!({"kind": "test", "status": "enabled"})),
    )
    .await;
    assert_error(put, 503, "E_UNAVAILABLE").await;
    assert_eq!(app.get("/readyz").await.status(), 503);
    app.stop().await;

    let mut config = keyplane_server::ServeConfig::for_data_dir(&data);
    let refused = keyplane_server::Application::build(config.clone()).await;
    let error = refused
        .err()
        .expect("no start on a data directory that lost its database");
    assert!(
        error.to_string().contains("--allow-new-database"),
        "{error}"
    );
    assert!(!data.join("keyplane.db").exists(), "nothing was created");

    config.store.allow_new_database = true;
    let fresh = keyplane_server::Application::build(config).await;
    assert!(fresh.is_ok(), "an explicit flag starts a new database");
}

/// Before: started on a read-only file system, SQLite opened the database read-only and the
/// server came up answering every write with an error, and went on doing so after the file
/// system became writable again (every connection of the process shares that read-only
/// state). Now it refuses to start, saying why, and starts once the file system is writable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_refuses_to_start_and_starts_once_writable() {
    let Some(disk) = SmallDisk::mount("8m") else {
        return;
    };
    let data = disk.path.join("data");
    let app = TestAppBuilder::new(&Backend::Sqlite)
        .await
        .data_dir(&data)
        .start()
        .await;
    let boot = app.bootstrap().await;
    app.stop().await;
    let remount = |mode: &str| {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&disk.path)
            .status()
            .unwrap();
        assert!(status.success(), "remount {mode}");
    };
    remount("ro");
    let config = keyplane_server::ServeConfig::for_data_dir(&data);
    let refused = keyplane_server::Application::build(config.clone()).await;
    let error = refused.err().expect("no start on a read-only database");
    assert!(error.to_string().contains("cannot be written"), "{error}");

    remount("rw");
    let app = TestAppBuilder::new(&Backend::Sqlite)
        .await
        .data_dir(&data)
        .start()
        .await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    let token = app.access_token(&boot.api_key, &boot.api_secret).await;
    let put = send(
        &app,
        Method::PUT,
        &token,
        "/api/v0/api-keys/after-remount",
        Some(json!({"kind": "test", "status": "enabled"})),
    )
    .await;
    assert_eq!(put.status(), 200);
    app.stop().await;
}
