//! A throwaway Postgres cluster that speaks TLS, for the tests of
//! `sslmode`, `sslrootcert` and passwords kept out of URLs: `ssl = on` with
//! a certificate for `localhost` and `127.0.0.1` signed by a CA made for
//! the cluster (rcgen, nothing committed), and a `pg_hba.conf` under which
//! the user [`TLS_USER`] gets in over TLS with its password only:
//!
//! | connection | as | |
//! |---|---|---|
//! | TCP with TLS | `roost_tls` | scram-sha-256 |
//! | TCP without TLS | `roost_tls` | rejected |
//! | TCP | `postgres` | trust (the fixtures' own checks) |
//! | Unix socket | anyone | trust |
//!
//! So a test that gets in as `roost_tls` proves TLS was used and the
//! password was found. `roost_tls` owns the `roost` database.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::postgres::{own_runtime, Cluster};

/// The user that must come over TLS with a password.
pub const TLS_USER: &str = "roost_tls";

const HBA: &str = "\
local   all  all                       trust
hostssl all  roost_tls  127.0.0.1/32   scram-sha-256
host    all  roost_tls  127.0.0.1/32   reject
host    all  postgres   127.0.0.1/32   trust
";

/// A running cluster with TLS on; stopped and removed on drop.
pub struct TlsCluster {
    cluster: Cluster,
    /// The CA that signed the server's certificate (PEM).
    ca: PathBuf,
    /// A CA that signed nothing this cluster presents (PEM).
    other_ca: PathBuf,
    /// [`TLS_USER`]'s password, random per cluster.
    password: String,
}

impl TlsCluster {
    /// initdb, the certificates and `pg_hba.conf`, start, create the
    /// `roost` database owned by [`TLS_USER`].
    pub async fn start() -> Result<TlsCluster> {
        let mut cluster = Cluster::initialized(true)?;
        let (ca, ca_key) = certificate_authority("roost test CA")?;
        let (other, _) = certificate_authority("roost test CA that signed nothing here")?;
        let server_key = KeyPair::generate()?;
        let mut server = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = server.signed_by(&server_key, &ca, &ca_key)?;
        cluster.write_data_file("server.crt", &server.pem(), 0o644)?;
        cluster.write_data_file("server.key", &server_key.serialize_pem(), 0o600)?;
        cluster.write_data_file("pg_hba.conf", HBA, 0o600)?;
        let ca_path = write(cluster.dir(), "ca.pem", &ca.pem())?;
        let other_ca = write(cluster.dir(), "other-ca.pem", &other.pem())?;
        cluster.start_server()?;
        cluster.create_database().await?;
        let password = format!("pw-{:016x}", rand::random::<u64>());
        cluster
            .execute(&format!(
                "CREATE ROLE {TLS_USER} LOGIN PASSWORD '{password}'; \
                 ALTER DATABASE roost OWNER TO {TLS_USER}"
            ))
            .await?;
        Ok(TlsCluster {
            cluster,
            ca: ca_path,
            other_ca,
            password,
        })
    }

    /// `postgres://roost_tls@HOST:PORT/roost?PARAMS`, with no password.
    pub fn url(&self, host: &str, params: &str) -> String {
        let port = self.cluster.addr().port();
        format!("postgres://{TLS_USER}@{host}:{port}/roost?{params}")
    }

    /// The superuser's plain URL ([`Cluster::url`]), for a test's checks.
    pub fn admin_url(&self) -> String {
        self.cluster.url()
    }

    pub fn port(&self) -> u16 {
        self.cluster.addr().port()
    }

    /// [`TLS_USER`]'s password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The CA that signed the server's certificate.
    pub fn ca(&self) -> &Path {
        &self.ca
    }

    /// A CA that did not sign the server's certificate.
    pub fn other_ca(&self) -> &Path {
        &self.other_ca
    }
}

/// A self-signed CA certificate and its key.
fn certificate_authority(name: &str) -> Result<(Certificate, KeyPair)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok((params.self_signed(&key)?, key))
}

fn write(dir: &Path, name: &str, contents: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, contents).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// The TLS cluster every TLS test of this test binary uses, started once
/// and kept until the process exits (its watchdog then stops it). Always a
/// cluster of its own, whether or not `DATABASE_URL` is set.
///
/// Must be called outside a tokio runtime (it blocks on one of its own).
pub fn tls_cluster() -> &'static TlsCluster {
    static CLUSTER: OnceLock<TlsCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let runtime = own_runtime();
        let cluster = runtime.block_on(TlsCluster::start()).unwrap_or_else(|e| {
            panic!("cannot start a throwaway postgres cluster with TLS: {e:#}")
        });
        eprintln!(
            "throwaway postgres cluster with TLS at {} in {}",
            cluster.url("localhost", ""),
            cluster.cluster.dir().display()
        );
        cluster
    })
}
