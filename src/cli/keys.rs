//! `orders-api keys generate`: a new key for an operator to hand out, and the hash to configure.

use std::process::ExitCode;

use crate::auth::Scopes;
use crate::auth::generate::{default_id, generate as new_key, toml_entry};
use crate::auth::keys::RawKey;

/// Prints a new key, its hash and the configuration entry; the key is not kept anywhere.
pub fn generate(id: Option<String>, scopes: Scopes) -> ExitCode {
    let generated = match new_key() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("cannot read random bytes from the operating system: {e}");
            return ExitCode::FAILURE;
        }
    };
    let id = id.unwrap_or_else(|| default_id(&generated));
    // The same rules the configuration applies, so the printed entry always loads.
    let check = RawKey {
        id: Some(id.clone()),
        sha256: Some(generated.sha256.clone()),
        scopes: Some(scopes.iter().map(|s| s.as_str().to_string()).collect()),
    };
    if let Err(problems) = check.validate() {
        for (field, message) in problems {
            eprintln!("--{field}: {message}");
        }
        return ExitCode::from(2);
    }
    println!("key:    {}", generated.key);
    println!("sha256: {}", generated.sha256);
    println!();
    println!("# Give the key to its client now: it is shown once and stored nowhere.");
    println!("# Paste this into the configuration (or, as [[keys]], into auth.keys_file):");
    print!(
        "{}",
        toml_entry("auth.keys", &id, &generated.sha256, scopes)
    );
    ExitCode::SUCCESS
}
