//! Facts about failures that many modules read, with nothing of pixdex imported (a leaf): the
//! message of a caught panic, and whether an I/O error means the process is out of file
//! descriptors (transient by nature, whoever meets it).

/// The message of a caught panic (`catch_unwind`'s payload).
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown panic".into())
}

/// The process (EMFILE, 24) or the system (ENFILE, 23) is out of file descriptors: transient
/// by nature (descriptors come back as connections and files close), never the request's or
/// the file's fault.
pub fn is_fd_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The same, read from an error's text (errors that only carry a message, a caught panic's
/// message): "Too many open files" (EMFILE), "… in system" (ENFILE), "os error 24/23".
pub fn mentions_fd_exhaustion(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("too many open files") || m.contains("os error 24") || m.contains("os error 23")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Error as IoError;

    #[test]
    fn fd_exhaustion_is_recognised_by_code_and_by_text() {
        for code in [libc::EMFILE, libc::ENFILE] {
            let io = IoError::from_raw_os_error(code);
            assert!(is_fd_exhaustion(&io), "{code}");
            assert!(mentions_fd_exhaustion(&io.to_string()), "{io}");
        }
        let denied = IoError::from(std::io::ErrorKind::PermissionDenied);
        assert!(!is_fd_exhaustion(&denied));
        assert!(!mentions_fd_exhaustion(&denied.to_string()));
    }

    #[test]
    fn panic_messages() {
        let p = std::panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "boom 1");
        let p = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "unknown panic");
    }
}
