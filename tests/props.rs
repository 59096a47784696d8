//! Property tests over the parsers that take outside input: URLs, lease names,
//! the password redaction. None may panic; each must say yes or no correctly.

use leasehold::backend::keys::validate_name;
use leasehold::backend::url::{parse, redact_url};
use proptest::prelude::*;

proptest! {
    #[test]
    fn url_parsing_never_panics(s in any::<String>()) {
        let _ = parse(&s);
        let _ = redact_url(&s);
    }

    #[test]
    fn url_parsing_never_panics_on_url_like_input(
        scheme in prop::sample::select(vec!["redis", "rediss", "redis+sentinel", "redis+cluster", "x"]),
        rest in "[a-z0-9:@/,.\\[\\]%{}-]{0,60}",
    ) {
        let _ = parse(&format!("{scheme}://{rest}"));
    }

    #[test]
    fn names_are_accepted_exactly_when_valid(s in any::<String>()) {
        let valid = !s.is_empty()
            && s.len() <= 200
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/@+=".contains(&b));
        prop_assert_eq!(validate_name(&s).is_ok(), valid);
    }

    #[test]
    fn redaction_hides_the_password(
        user in "[a-z]{0,8}",
        pw in "[0-9][A-Za-z0-9]{5,19}",
        host in "[a-z]{1,10}",
        port in 1u16..,
    ) {
        let url = format!("redis://{user}:{pw}@{host}:{port}/0");
        let shown = redact_url(&url);
        prop_assert!(!shown.contains(&pw), "{}", shown);
        prop_assert!(shown.contains(&host));
    }
}
