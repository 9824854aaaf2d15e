//! A private PostgreSQL cluster that a test stops and starts again, for
//! database outages (the shared test server must stay up for the others).

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct PrivatePostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// PostgreSQL refuses to run as root: its commands then run as `postgres`.
    as_postgres: bool,
}

fn find_bin() -> Option<PathBuf> {
    let from_path = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(initdb) = from_path {
        return initdb.parent().map(Path::to_path_buf);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

impl PrivatePostgres {
    /// A new cluster on a free port, or `None` (said loudly) when this
    /// machine has no PostgreSQL server programs.
    pub fn start() -> Option<Self> {
        let Some(bin) = find_bin() else {
            eprintln!("!!! SKIPPED: no initdb here; the database outage is NOT tested !!!");
            return None;
        };
        let dir =
            std::env::temp_dir().join(format!("agentrun-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if as_postgres {
            let chown = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(chown.success());
        }
        let cluster = Self {
            port: crate::free_port(),
            dir,
            bin,
            as_postgres,
        };
        let data = cluster.dir.join("data");
        let initdb = cluster
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust"])
            .output()
            .unwrap();
        assert!(initdb.status.success(), "initdb: {initdb:?}");
        cluster.resume();
        Some(cluster)
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    /// The URL of `database` on this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server at once, as a crash would (`-m immediate`): open
    /// connections break and the next start recovers from the WAL.
    pub fn crash(&self) {
        let stopped = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .unwrap();
        assert!(stopped.status.success(), "pg_ctl stop: {stopped:?}");
    }

    /// Starts the server (again), on the same port, and waits until it
    /// takes connections.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let started = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-o", &options, "start"])
            .output()
            .unwrap();
        assert!(started.status.success(), "pg_ctl start: {started:?}");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
