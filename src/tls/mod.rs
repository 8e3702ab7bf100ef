//! TLS for Gantry: the air-gapped PKI (`gantry tls ca create`, `gantry tls
//! cert create`) and the rustls configurations of the API and Raft peer ports.
//!
//! Layout: `pki` writes CA and leaf files, `public` builds the HTTPS client
//! for servers outside the PKI (an IdP), `kind` says which kind a
//! certificate is, `config` builds rustls configs that accept each kind only
//! where it belongs, `files` reads PEM, `error` is `TlsError`. This file
//! holds only the clap command and its printing.
//!
//! The command line is fixed (scripts depend on it):
//! `gantry tls ca create --out DIR` and
//! `gantry tls cert create --ca DIR --name NAME --kind server|operator|client
//! [--dns H]... [--ip IP]... --out DIR`.

mod config;
mod error;
mod files;
mod kind;
mod pki;
mod public;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::path::PathBuf;

pub use config::{
    api_client_config, api_server_config, peer_client_config, peer_server_config, TlsFiles,
};
pub use kind::{cert_kind, CertKind};
pub use pki::{ca_paths, create_ca, create_cert, leaf_paths};
pub use public::public_https_client;

#[derive(Debug, clap::Subcommand)]
pub enum TlsCommand {
    /// The cluster's certificate authority
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Certificates signed by the cluster CA
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Create a new CA: DIR/ca.pem and DIR/ca-key.pem (never overwritten)
    Create {
        /// Directory to write into (created if missing)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// Issue a certificate: DIR/NAME.pem and DIR/NAME-key.pem (never overwritten)
    Create {
        /// Directory holding ca.pem and ca-key.pem
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// Holder name (letters, digits, '.', '_', '-'); also the file name
        #[arg(long)]
        name: String,
        /// server: a control-plane node; operator: a backend operator; client: a user or tool
        #[arg(long)]
        kind: CertKind,
        /// DNS name the holder is reached at (repeatable)
        #[arg(long = "dns", value_name = "HOST")]
        dns: Vec<String>,
        /// IP address the holder is reached at (repeatable)
        #[arg(long = "ip", value_name = "IP")]
        ip: Vec<IpAddr>,
        /// Directory to write into (created if missing)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// Runs `gantry tls ...`, printing each file written.
pub fn run_tls(command: TlsCommand) -> anyhow::Result<()> {
    match command {
        TlsCommand::Ca {
            command: CaCommand::Create { out },
        } => {
            create_ca(&out)?;
            let (cert, key) = ca_paths(&out);
            println!(
                "wrote {} (CA certificate: give it to every node, operator and client)",
                cert.display()
            );
            println!(
                "wrote {} (CA private key, mode 0600: keep it offline)",
                key.display()
            );
        }
        TlsCommand::Cert {
            command:
                CertCommand::Create {
                    ca,
                    name,
                    kind,
                    dns,
                    ip,
                    out,
                },
        } => {
            create_cert(&ca, &name, kind, &dns, &ip, &out)?;
            let (cert, key) = leaf_paths(&out, &name);
            println!("wrote {} ({kind} certificate for {name})", cert.display());
            println!("wrote {} (private key, mode 0600)", key.display());
        }
    }
    Ok(())
}
