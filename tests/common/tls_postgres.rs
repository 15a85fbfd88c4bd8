//! A throwaway PostgreSQL that accepts TLS connections only (`hostssl` in
//! pg_hba.conf), with a server certificate for `localhost` signed by a CA
//! the test made; started with the machine's `initdb`/`pg_ctl` on a free
//! loopback port, stopped on drop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TlsPostgres {
    pub port: u16,
    /// The CA that signed the server's certificate.
    pub ca: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

fn as_postgres(cmd: &Path) -> Command {
    // PostgreSQL refuses to run as root.
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(cmd);
        c
    } else {
        Command::new(cmd)
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

impl TlsPostgres {
    pub fn start() -> TlsPostgres {
        Self::start_with(None)
    }

    /// With `password`, the `postgres` user needs it (scram-sha-256).
    pub fn start_with(password: Option<&str>) -> TlsPostgres {
        let initdb = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql (scripts/test.sh installs them)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin/initdb")))
            .filter(|p| p.exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let bin = initdb.parent().unwrap().to_path_buf();
        let dir = tempfile::Builder::new().prefix("grayshift-pgtls").tempdir_in("/tmp").unwrap();
        let data = dir.path().join("data");
        if is_root() {
            let status = Command::new("chown").arg("postgres").arg(dir.path()).status().unwrap();
            assert!(status.success());
        }
        let mut initdb = as_postgres(&initdb);
        initdb.arg("-D").arg(&data).args(["-U", "postgres", "-A", "trust"]);
        if let Some(password) = password {
            let pwfile = dir.path().join("pwfile");
            std::fs::write(&pwfile, password).unwrap();
            std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o644)).unwrap();
            initdb.arg("--pwfile").arg(&pwfile);
        }
        let out = initdb.output().unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));

        let ca_pair = crate::common::test_ca("grayshift test CA");
        let (server, server_key) = crate::common::localhost_cert(&ca_pair);
        let write_private = |name: &str, text: String| {
            let path = data.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            if is_root() {
                Command::new("chown").arg("postgres").arg(&path).status().unwrap();
            }
        };
        write_private("server.crt", server.pem());
        write_private("server.key", server_key.serialize_pem());
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_pair.0.pem()).unwrap();
        let other_ca = dir.path().join("other-ca.pem");
        std::fs::write(&other_ca, crate::common::test_ca("another test CA").0.pem()).unwrap();

        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let method = if password.is_some() { "scram-sha-256" } else { "trust" };
        write_private("pg_hba.conf", format!("hostssl all all 127.0.0.1/32 {method}\n"));
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
            dir.path().display()
        );
        let mut existing = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        existing.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), existing).unwrap();
        let out = as_postgres(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("log"))
            .args(["-w", "start"])
            .output()
            .unwrap();
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        assert!(out.status.success(), "pg_ctl start: {} {log}", String::from_utf8_lossy(&out.stderr));
        TlsPostgres { port, ca, other_ca, bin, data, _dir: dir }
    }

    /// A URL naming the server `host` (for the certificate check) while
    /// connecting to 127.0.0.1, with `options` (e.g. `sslmode=verify-full`).
    pub fn url(&self, host: &str, options: &str) -> String {
        format!("postgresql://postgres@{host}:{}/postgres?hostaddr=127.0.0.1&connect_timeout=5&{options}", self.port)
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ =
            as_postgres(&self.bin.join("pg_ctl")).arg("-D").arg(&self.data).args(["-m", "immediate", "stop"]).output();
    }
}
