//! `wardhook relay`: run the DMZ relay, and `wardhook relay keygen`: the inside node's key
//! pair (docs/RELAY.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use crate::config::relay::PRIVATE_KEY_PREFIX;
use crate::config::Config;

/// `relay …` subcommands.
#[derive(Debug, Subcommand)]
pub enum RelayCommand {
    /// Write a new inside key pair: the private key to `--out` (mode 0600, never overwritten;
    /// reference it from the inside node's `[relay] private_keys` as `file:PATH`), the public
    /// key to `--out`.pub and to stdout (for the relay's `[relay_server] public_key`).
    Keygen {
        /// The private key file to create.
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
    },
    /// Print the public key of an inside private key file (to check which key a relay seals
    /// to, or to configure a relay again after a rotation).
    PublicKey {
        /// The private key file written by `relay keygen`.
        #[arg(long, value_name = "PATH")]
        key: PathBuf,
    },
}

/// Run the relay (no subcommand) or a subcommand.
pub fn run(config: &Path, command: Option<RelayCommand>) -> anyhow::Result<ExitCode> {
    match command {
        Some(RelayCommand::Keygen { out }) => keygen(&out),
        Some(RelayCommand::PublicKey { key }) => public_key(&key),
        None => run_relay(config),
    }
}

fn keygen(out: &Path) -> anyhow::Result<ExitCode> {
    let (private, public) = crate::relay::seal::generate_key_pair();
    let mut file = crate::fsutil::create_new_private(out)
        .with_context(|| format!("cannot create {} (it must not exist)", out.display()))?;
    std::io::Write::write_all(&mut file, format!("{}\n", private.as_str()).as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", out.display()))?;
    let mut pub_path = out.as_os_str().to_owned();
    pub_path.push(".pub");
    let pub_path = PathBuf::from(pub_path);
    std::fs::write(&pub_path, format!("{public}\n"))
        .with_context(|| format!("cannot write {}", pub_path.display()))?;
    println!("{public}");
    eprintln!(
        "wrote the inside private key to {} (mode 0600; keep it on the inside node only) and \
         the public key to {} (for the relay's [relay_server] public_key)",
        out.display(),
        pub_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn public_key(key: &Path) -> anyhow::Result<ExitCode> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(key).with_context(|| format!("cannot read {}", key.display()))?,
    );
    let private = crate::relay::seal::PrivateKey::parse(&text)?;
    println!("{}", private.public_key_text());
    eprintln!("key id {}", private.id());
    Ok(ExitCode::SUCCESS)
}

/// Why a config may not run as a relay, if it may not: it must have `[relay_server]`, must not
/// have `[relay]` (which names the inside private keys), and must not contain private key text
/// anywhere.
pub fn refusal(config: &Config, text: &str) -> Option<String> {
    if config.relay_server.is_none() {
        return Some(format!(
            "{} has no [relay_server] section: `wardhook relay` needs the inside node's public key and the pull listener",
            config.path.display()
        ));
    }
    if config.relay.is_some() {
        return Some(format!(
            "{} has a [relay] section, which names the inside node's private keys: a relay must never hold them",
            config.path.display()
        ));
    }
    if text.contains(PRIVATE_KEY_PREFIX) {
        return Some(format!(
            "{} contains an inside private key ({PRIVATE_KEY_PREFIX}…): a relay must never hold it",
            config.path.display()
        ));
    }
    None
}

fn run_relay(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let text = std::fs::read_to_string(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    if let Some(reason) = refusal(&config, &text) {
        anyhow::bail!("refusing to start the relay: {reason}");
    }
    super::run_server(config_path.to_owned(), config, false)
}
