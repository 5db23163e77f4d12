//! Whether a file `genconfig` just wrote would be committed: a config holds
//! secrets, and a developer running the README's tour inside a clone must be
//! told when git does not ignore it.

use std::path::Path;
use std::process::{Command, Stdio};

/// A warning when `file` sits in a git work tree that does not ignore it;
/// `None` when it is ignored or outside any work tree. Asks `git
/// check-ignore` when git is installed, so every ignore rule counts (nested
/// `.gitignore`s, `.git/info/exclude`, the global excludes file); without
/// git, a `.git` above the file is enough to warn.
pub fn unignored_secrets_warning(file: &Path) -> Option<String> {
    let file = std::path::absolute(file).ok()?;
    let dir = file.parent()?;
    let shown = file.display();
    let advice = "it holds secrets (HMAC key, API key, bus and history keys): \
                  add it to .gitignore, or keep it outside the repository";
    match git(dir, &["rev-parse", "--is-inside-work-tree"]) {
        Some(status) if !status.success() => None,
        Some(_) => {
            let name = file.file_name()?.to_str()?;
            // check-ignore: 0 = ignored, 1 = not ignored, 128 = error.
            let ignored = git(dir, &["check-ignore", "--quiet", "--", name])?;
            (ignored.code() == Some(1))
                .then(|| format!("{shown} is in a git work tree that does not ignore it; {advice}"))
        }
        None => dir.ancestors().any(|d| d.join(".git").exists()).then(|| {
            format!("{shown} may be in a git work tree (git is not installed to ask); {advice}")
        }),
    }
}

/// Runs git in `dir`, quietly; `None` when git cannot be run.
fn git(dir: &Path, args: &[&str]) -> Option<std::process::ExitStatus> {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path, args: &[&str]) {
        let status = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?}");
    }

    #[test]
    fn warns_only_for_an_unignored_file_in_a_work_tree() {
        let base = std::env::temp_dir().join(format!("herald-gitcheck-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let repo = base.join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        let outside = base.join("outside.toml");
        std::fs::write(&outside, "").unwrap();
        // Outside any work tree (temp dirs are not in one): nothing to say.
        assert_eq!(unignored_secrets_warning(&outside), None);

        run(&repo, &["init", "--quiet"]);
        let config = repo.join("herald.toml");
        std::fs::write(&config, "").unwrap();
        let warning = unignored_secrets_warning(&config).expect("a warning");
        assert!(
            warning.contains("herald.toml") && warning.contains(".gitignore"),
            "{warning}"
        );

        std::fs::write(repo.join(".gitignore"), "herald.toml\n").unwrap();
        assert_eq!(unignored_secrets_warning(&config), None);
        let other = repo.join("other.toml");
        std::fs::write(&other, "").unwrap();
        assert!(unignored_secrets_warning(&other).is_some());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
