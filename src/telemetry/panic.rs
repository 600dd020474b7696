//! The process's panic hook: where a panic happened, never what its message says.

use std::io::Write;

/// Replace the default panic hook, which prints the panic's message, by one that reports only
/// where it happened. A message can carry whatever the panicking code formatted — a handler's
/// or a library's view of an event, that is patient data — and stderr ends up in the journal.
/// Long-running loops catch panics and go on (see `dispatch`); this is what is left on stderr
/// and in the log.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        report_panic(info, &mut std::io::stderr().lock());
    }));
}

fn report_panic(info: &std::panic::PanicHookInfo<'_>, out: &mut dyn Write) {
    let location = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_else(|| "an unknown place".to_owned());
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("unnamed");
    tracing::error!(%location, thread = name, "internal error (panic); its message is withheld");
    let _ = writeln!(
        out,
        "wardhook: internal error (panic) in thread '{name}' at {location}; the message is \
         withheld because it may contain patient data"
    );
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_panic_is_reported_by_its_place_never_by_its_message() {
        let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = Arc::clone(&seen);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let mut buf = sink
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            super::report_panic(info, &mut *buf);
        }));
        let result = std::panic::catch_unwind(|| {
            panic!("caller Zyxwvut Canaryperson, DOB 1980-01-01");
        });
        std::panic::set_hook(previous);
        assert!(result.is_err());
        let text = String::from_utf8(
            seen.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
        .expect("utf-8");
        assert!(text.contains("internal error (panic)"), "{text}");
        assert!(text.contains("src/telemetry/panic.rs:"), "{text}");
        assert!(!text.contains("Canaryperson"), "{text}");
        assert!(!text.contains("1980"), "{text}");
    }
}
