//! Property tests over the parsers that take outside input: URLs, lease names,
//! the password redaction, quota periods, what a fetch command prints. None
//! may panic; each must say yes or no correctly.

use std::time::Duration;

use leasehold::backend::keys::validate_name;
use leasehold::backend::url::{parse, redact_url};
use leasehold::cache::parse_fetch_output;
use leasehold::quota::Period;
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

    /// Issue 21.1: a password that was not percent-encoded (`/`, `@`, `:`,
    /// `%`, `?`, `#`, spaces) shows nowhere, wholly or in part: not in the
    /// redacted URL, not in a parse error, whatever the scheme. The markers
    /// ¶ § ¤ at its start, middle and end appear in no message of ours.
    #[test]
    fn no_part_of_an_unencoded_password_shows(
        scheme in prop::sample::select(vec!["redis://", "rediss://", "redis+sentinel://", "redis+cluster://", "x://", "", "redis:/"]),
        user in "[a-z]{0,6}",
        a in "[A-Za-z0-9/@:%?#+= .-]{0,8}",
        b in "[A-Za-z0-9/@:%?#+= .-]{0,8}",
        host in "[a-z]{1,8}(:[0-9]{1,5})?(,[a-z]{1,3}:[0-9]{1,4})?",
        tail in "(/[a-z0-9]{0,6}){0,2}",
    ) {
        let pw = format!("¶{a}§{b}¤");
        let url = format!("{scheme}{user}:{pw}@{host}{tail}");
        let clean = |s: &str| !s.contains('¶') && !s.contains('§') && !s.contains('¤');
        let shown = redact_url(&url);
        prop_assert!(clean(&shown), "{} -> {}", url, shown);
        if let Err(e) = parse(&url) {
            let e = e.to_string();
            prop_assert!(clean(&e), "{} -> {}", url, e);
        }
    }
}

proptest! {
    /// `--per`: never panics; says yes exactly to one whole number and a
    /// known unit within 1 ms .. 100 years.
    #[test]
    fn periods_are_accepted_exactly_when_valid(
        n in prop_oneof![0u64..400, 0u64..100_000_000, any::<u64>()],
        unit in prop::sample::select(vec![
            "ms", "s", "m", "h", "d", "w", "mo", "y", "month", "years", "x", "", "M", "µs",
        ]),
        space in any::<bool>(),
    ) {
        let s = format!("{n}{}{unit}", if space { " " } else { "" });
        let ms_per_unit: Option<u128> = match unit {
            "ms" => Some(1),
            "s" => Some(1_000),
            "m" => Some(60_000),
            "h" => Some(3_600_000),
            "d" => Some(86_400_000),
            "w" => Some(7 * 86_400_000),
            _ => None,
        };
        let valid = match unit {
            "mo" | "month" | "M" => (1..=1_200).contains(&n),
            "y" | "years" => (1..=100).contains(&n),
            _ => match ms_per_unit {
                Some(per) => n >= 1 && u128::from(n) * per <= 36_525 * 86_400_000,
                None => false,
            },
        };
        prop_assert_eq!(Period::parse(&s).is_ok(), valid, "{}", s);
    }

    #[test]
    fn period_parsing_never_panics(s in any::<String>()) {
        let _ = Period::parse(&s);
    }

    /// Whatever a fetch command prints, parsing never panics, and an error
    /// never quotes a line of it.
    #[test]
    fn fetch_output_errors_never_show_the_output(
        lines in prop::collection::vec("[A-Za-z0-9+/=:. {}\"_-]{0,40}", 0..5),
        secret in "[a-z]{12}",
    ) {
        let out = lines
            .iter()
            .map(|l| format!("{secret}{l}"))
            .collect::<Vec<_>>()
            .join("\n");
        if let Err(e) = parse_fetch_output(&out, Duration::from_secs(60)) {
            prop_assert!(!e.contains(&secret), "{}", e);
            prop_assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn fetch_output_parsing_never_panics(s in any::<String>(), secs in any::<f64>()) {
        let _ = parse_fetch_output(&s, Duration::from_secs(60));
        let json = format!("{{\"value\": \"v\", \"expires_in\": {secs}}}");
        if let Ok((_, life)) = parse_fetch_output(&json, Duration::from_secs(60)) {
            prop_assert!(!life.is_zero() && life <= leasehold::cache::MAX_LIFETIME);
        }
    }
}

proptest! {
    /// Fixed windows contain the instant they are asked for, and tile time:
    /// the next one starts where this one ends; in every zone, across
    /// daylight-saving changes, for every kind of period.
    #[test]
    fn fixed_windows_contain_now_and_tile_time(
        secs in 0i64..4_102_444_800, // 1970 .. 2100
        ms in 0i64..1000,
        zone in prop::sample::select(vec![
            "UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe",
            "America/Sao_Paulo", "Asia/Kolkata", "Pacific/Apia", "America/St_Johns",
            "Africa/Casablanca", "Antarctica/Troll",
        ]),
        per in prop::sample::select(vec![
            "1s", "250ms", "45m", "15m", "1h", "2h", "12h", "24h", "7h", "25h", "36h",
            "1d", "3d", "1w", "2w", "1mo", "3mo", "5mo", "1y", "2y",
        ]),
        near_change in any::<bool>(),
        shift in -4 * 3_600_000i64..4 * 3_600_000,
    ) {
        let tz = jiff::tz::TimeZone::get(zone).expect("zone");
        let period = Period::parse(per).expect("period");
        let mut now = jiff::Timestamp::from_millisecond(secs * 1000 + ms).expect("now");
        if near_change {
            // Within a few hours of the zone's next offset change, where
            // windows are hardest.
            if let Some(t) = tz.following(now).next() {
                now = t
                    .timestamp()
                    .checked_add(jiff::SignedDuration::from_millis(shift))
                    .expect("near");
            }
        }
        let w = leasehold::quota::window(now, period, &tz).expect("window");
        prop_assert!(w.start <= now && now < w.end, "{:?} {} {}", w, now, per);
        prop_assert!(w.end <= w.last);
        let next = leasehold::quota::window(w.end, period, &tz).expect("next");
        prop_assert_eq!(next.start, w.end, "{:?} then {:?}", w, next);
        prop_assert_ne!(&next.id, &w.id);
        let again = leasehold::quota::window(w.start, period, &tz).expect("same");
        prop_assert_eq!(&again, &w);
    }
}
