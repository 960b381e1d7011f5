//! Shared copies of the short strings that repeat across sessions (app ids, IdP names, group
//! names, acr/amr values): a million sessions of one app hold one `"timesheet"`, not a million.
//!
//! The table is bounded: past [`MAX_INTERNED`] distinct strings, new ones are simply not
//! shared, so a flood of unique values (say, per-user groups) cannot grow it without limit.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

/// Most distinct strings kept for sharing.
const MAX_INTERNED: usize = 10_000;
/// Longer strings are not worth a table lookup (and are unlikely to repeat).
const MAX_INTERNED_LEN: usize = 128;

fn table() -> &'static Mutex<HashSet<Arc<str>>> {
    static TABLE: OnceLock<Mutex<HashSet<Arc<str>>>> = OnceLock::new();
    TABLE.get_or_init(Mutex::default)
}

/// A shared copy of `text` (a fresh one once the table is full or `text` is long).
pub fn intern(text: &str) -> Arc<str> {
    if text.len() > MAX_INTERNED_LEN {
        return Arc::from(text);
    }
    let mut table = table()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(shared) = table.get(text) {
        return shared.clone();
    }
    let fresh: Arc<str> = Arc::from(text);
    if table.len() < MAX_INTERNED {
        table.insert(fresh.clone());
    }
    fresh
}

/// Shared copies of each string.
pub fn intern_all<S: AsRef<str>>(texts: impl IntoIterator<Item = S>) -> Vec<Arc<str>> {
    texts.into_iter().map(|t| intern(t.as_ref())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_strings_share_one_allocation() {
        let a = intern("staff-intern-test");
        let b = intern(&String::from("staff-intern-test"));
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(&*a, "staff-intern-test");
        let long = "x".repeat(MAX_INTERNED_LEN + 1);
        assert!(!Arc::ptr_eq(&intern(&long), &intern(&long)));
    }
}
