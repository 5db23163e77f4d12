//! The console password: stored as an Argon2id PHC string (decisions.md
//! D16), never in clear. `herald hashpassword` and `herald genconfig` make
//! one with [`hash`]; a login checks against it with [`verify`].

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher as _, PasswordVerifier as _};

/// Longest password accepted, in bytes: more is refused before hashing, so
/// a login cannot make the node hash megabytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A PHC string of `password` with a fresh random salt and Argon2id's
/// default parameters (19 MiB, 2 passes, 1 lane: OWASP's minimum).
pub fn hash(password: &str) -> Result<String, String> {
    if password.is_empty() {
        return Err("the password is empty".to_owned());
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(format!("the password is over {MAX_PASSWORD_BYTES} bytes"));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

/// Why `hash` is not a usable password hash, if it is not: an Argon2 PHC
/// string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`).
pub fn check_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|_| {
        "not a password hash (a PHC string such as $argon2id$v=19$...): \
         store the output of `herald hashpassword`, never the password"
            .to_owned()
    })?;
    match parsed.algorithm.as_str() {
        "argon2id" | "argon2i" | "argon2d" => {}
        other => {
            return Err(format!(
                "hash algorithm {other:?} is not supported: use `herald hashpassword` (Argon2id)"
            ))
        }
    }
    if parsed.hash.is_none() {
        return Err("the PHC string has no hash part".to_owned());
    }
    // The parameters must be ones Argon2 accepts, or every login would fail.
    argon2::Params::try_from(&parsed).map_err(|e| format!("bad Argon2 parameters: {e}"))?;
    Ok(())
}

/// Whether `password` matches `hash` (constant time in the comparison;
/// the cost is the hash's own parameters).
pub fn verify(hash: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = hash("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert!(check_hash(&hash).is_ok());
        assert!(verify(&hash, "correct horse"));
        assert!(!verify(&hash, "correct horse "));
        assert!(!verify(&hash, ""));
        // Fresh salt every time.
        assert_ne!(super::hash("correct horse").unwrap(), hash);
    }

    #[test]
    fn a_password_in_clear_or_a_foreign_hash_is_refused_with_the_reason() {
        let clear = check_hash("hunter2").unwrap_err();
        assert!(clear.contains("herald hashpassword"), "{clear}");
        let bcrypt = check_hash("$2b$12$abcdefghijklmnopqrstuuu").unwrap_err();
        assert!(bcrypt.contains("hashpassword"), "{bcrypt}");
        let scrypt =
            check_hash("$scrypt$ln=15,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA").unwrap_err();
        assert!(scrypt.contains("not supported"), "{scrypt}");
        assert!(!verify("hunter2", "hunter2"));
        assert!(hash("").is_err());
        assert!(hash(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }
}
