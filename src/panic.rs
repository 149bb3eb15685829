//! The message of a caught panic, shared by every place that catches user code
//! (stage callbacks, dispatcher selectors and hashes, supervisors, flow operators).

use std::any::Any;

/// The text a panic was raised with: the `&str` or `String` given to `panic!`, or a
/// placeholder for any other payload (`std::panic::panic_any` with another type).
pub(crate) fn message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

#[cfg(test)]
mod tests {
    use super::message;

    #[test]
    fn reads_str_and_string_payloads() {
        let p = std::panic::catch_unwind(|| panic!("static text")).unwrap_err();
        assert_eq!(message(p.as_ref()), "static text");
        let n = 7;
        let p = std::panic::catch_unwind(move || panic!("formatted {n}")).unwrap_err();
        assert_eq!(message(p.as_ref()), "formatted 7");
        let p = std::panic::catch_unwind(|| std::panic::panic_any(5u8)).unwrap_err();
        assert_eq!(message(p.as_ref()), "non-string panic payload");
    }
}
