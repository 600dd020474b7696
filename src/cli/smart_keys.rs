//! `wardhook keys smart` / `keys smart-jwks`: the key pair the `fhir` handler signs SMART
//! Backend Services client assertions with. The private key goes to a file (PKCS#8 PEM, mode
//! 0600, never overwritten) that the handler's `auth.private_key = "file:…"` references; the
//! public half is printed as a JWKS on stdout, to register with the EHR.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use wardhook_handler_fhir::smart::{generate_key, SigningKey};

/// Generate an ES384 (EC P-384) key, write it to `out` and print its JWKS.
pub fn generate(out: &Path, stdout: &mut impl std::io::Write) -> anyhow::Result<()> {
    let key = generate_key().context("cannot generate a key")?;
    let mut file = crate::fsutil::create_new_private(out).with_context(|| {
        format!(
            "cannot create {} (an existing key is never overwritten)",
            out.display()
        )
    })?;
    file.write_all(key.private_pem.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", out.display()))?;
    writeln!(stdout, "{}", serde_json::to_string_pretty(&key.jwks)?)?;
    eprintln!(
        "wrote the private key to {} (mode 0600); register the JWKS above with the EHR \
         (kid {}), then set auth.private_key = \"file:{}\"",
        out.display(),
        key.kid,
        out.display()
    );
    Ok(())
}

/// Print the JWKS of an existing key (`kid` as configured, else its thumbprint).
pub fn print_jwks(
    key: &Path,
    kid: Option<String>,
    stdout: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let pem = zeroize::Zeroizing::new(
        std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?,
    );
    let key = SigningKey::from_pem(&pem, kid).with_context(|| format!("{}", key.display()))?;
    writeln!(stdout, "{}", serde_json::to_string_pretty(&key.jwks())?)?;
    Ok(())
}
