//! The one rule for names a config gives and templates refer to: backend
//! names, route captures and query parameters.

/// Letters, digits, `_` and `-`, not empty, starting with a letter or `_`.
///
/// One rule for every name, so that whatever can be named can be referred
/// to: a backend called `user-profile` is `{user-profile.id}` in a template.
pub(crate) fn is_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// How [`is_name`] is explained in error messages.
pub(crate) const NAME_RULE: &str = "letters, digits, _ and -, starting with a letter or _";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_start_with_a_letter_and_hold_no_punctuation_but_dashes() {
        for good in ["a", "_a", "user-profile", "A_9"] {
            assert!(is_name(good), "{good}");
        }
        for bad in ["", "9a", "-a", "a.b", "a b", "é", "a/b"] {
            assert!(!is_name(bad), "{bad}");
        }
    }
}
