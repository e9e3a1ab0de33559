//! Where a task panicked. A caught panic carries only its payload; where it happened is
//! known to the panic hook alone. So the worker installs a hook that notes the place for
//! the thread that panicked, and the task's `catch_unwind`, which returns on that same
//! thread within the same poll, reads it back.

use std::any::Any;
use std::cell::RefCell;
use std::sync::Once;

use crate::traceback::Frame;

/// A panic as the hook saw it: its message, and where it happened.
type Noted = (Option<String>, Frame);

thread_local! {
    static LAST_PANIC: RefCell<Option<Noted>> = const { RefCell::new(None) };
}

/// Installs, once per process, a panic hook that notes where each panic happens, then
/// calls the hook set before it (by default, the one printing the panic to stderr). A
/// hook the application sets afterwards replaces it: panics are still caught and
/// recorded, only without their place.
pub(crate) fn note_panic_places() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(location) = info.location() {
                let frame = Frame::new(location.file().to_owned(), location.line());
                let noted = (message_of(info.payload()), frame);
                // Not during the thread's teardown, nor while the slot is being read.
                let _ = LAST_PANIC.try_with(|last| {
                    if let Ok(mut last) = last.try_borrow_mut() {
                        *last = Some(noted);
                    }
                });
            }
            previous(info);
        }));
    });
}

/// The message a panic payload carries: `panic!`'s formatted text, if it is one.
pub(crate) fn message_of(payload: &(dyn Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
}

/// Where the panic with `message` just caught on this thread happened, if the hook noted
/// it. The note is taken, so a later panic never finds it; one left by another panic
/// (the hook replaced since) is not taken for this one's unless the messages agree.
pub(crate) fn place_of(message: &Option<String>) -> Option<Frame> {
    let noted = LAST_PANIC
        .try_with(|last| last.try_borrow_mut().ok()?.take())
        .ok()
        .flatten()?;
    (noted.0 == *message).then_some(noted.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_is_found_where_it_happened() {
        note_panic_places();
        let line = line!() + 1;
        let caught = std::panic::catch_unwind(|| panic!("kaboom {}", 42)).unwrap_err();
        let message = message_of(&*caught);
        assert_eq!(message.as_deref(), Some("kaboom 42"));
        assert_eq!(
            place_of(&message),
            Some(Frame::new(file!().to_owned(), line))
        );
        assert_eq!(place_of(&message), None, "taken once");
    }

    #[test]
    fn another_panics_place_is_not_taken() {
        note_panic_places();
        let _ = std::panic::catch_unwind(|| panic!("first"));
        assert_eq!(place_of(&Some("second".into())), None);
    }
}
