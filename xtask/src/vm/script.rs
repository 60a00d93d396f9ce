//! The command script the VM runs (as `/cmd.sh` in the per-run initramfs): the caller's
//! environment, `cd` to the caller's directory, `exec` the command — every word quoted for bash.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::INSIDE_ENV;

/// Environment variables not carried into the VM.
const ENV_SKIP: &[&str] = &[
    "PWD",
    "OLDPWD",
    "SHLVL",
    "_",
    "TERM",
    // read-only in bash: `export` would fail with a message in the command's output
    "SHELLOPTS",
    "BASHOPTS",
    "BASH_VERSINFO",
    "EUID",
    "PPID",
    "UID",
    INSIDE_ENV,
];

/// `s` as one bash word.
pub fn sh_quote(s: &[u8]) -> Vec<u8> {
    let plain = |c: &u8| c.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(c);
    if !s.is_empty() && s.iter().all(plain) {
        return s.to_vec();
    }
    let mut q = vec![b'\''];
    for &c in s {
        if c == b'\'' {
            q.extend_from_slice(b"'\\''");
        } else {
            q.push(c);
        }
    }
    q.push(b'\'');
    q
}

fn is_shell_name(s: &[u8]) -> bool {
    s.first()
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
        && s.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// The script the VM runs: the environment, `extra` (shell lines: a node's own variables),
/// `cd` to `cwd`, `exec` the command.
pub fn command_script<K: AsRef<OsStr>, V: AsRef<OsStr>>(
    cmd: &[impl AsRef<OsStr>],
    cwd: &Path,
    env: impl IntoIterator<Item = (K, V)>,
    extra: &str,
) -> Vec<u8> {
    let mut s = b"#!/bin/bash\n".to_vec();
    for (k, v) in env {
        let (k, v) = (k.as_ref().as_bytes(), v.as_ref().as_bytes());
        if !is_shell_name(k) || ENV_SKIP.iter().any(|skip| skip.as_bytes() == k) {
            continue;
        }
        s.extend_from_slice(b"export ");
        s.extend_from_slice(k);
        s.push(b'=');
        s.extend_from_slice(&sh_quote(v));
        s.push(b'\n');
    }
    s.extend_from_slice(extra.as_bytes());
    s.extend_from_slice(format!("export {INSIDE_ENV}=1\ncd ").as_bytes());
    s.extend_from_slice(&sh_quote(cwd.as_os_str().as_bytes()));
    s.extend_from_slice(b" || exit 97\nexec");
    for a in cmd {
        s.push(b' ');
        s.extend_from_slice(&sh_quote(a.as_ref().as_bytes()));
    }
    s.push(b'\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote(b"plain/path-1.0"), b"plain/path-1.0");
        assert_eq!(sh_quote(b""), b"''");
        assert_eq!(sh_quote(b"a b"), b"'a b'");
        assert_eq!(sh_quote(b"it's $HOME"), b"'it'\\''s $HOME'");
        assert_eq!(sh_quote(b"line\nbreak"), b"'line\nbreak'");
    }

    #[test]
    fn script() {
        let env = [
            ("HOME", "/root"),
            ("PWD", "/x"),
            ("BASH_FUNC_f%%", "() { :; }"),
            ("A", "x y"),
        ];
        let s = command_script(&["echo", "a b"], Path::new("/w d"), env, "");
        let s = String::from_utf8(s).unwrap();
        assert_eq!(
            s,
            "#!/bin/bash\nexport HOME=/root\nexport A='x y'\nexport XTASK_VM_INSIDE=1\n\
             cd '/w d' || exit 97\nexec echo 'a b'\n"
        );
    }
}
