//! Property tests: any size, rate or duration text gives a value or a clear error, never a
//! panic. (The input-line classifier's properties are unit tests in `src/input.rs`.)

use fetchall::{ByteSize, HumanDuration, Rate};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn units_parse_or_fail_cleanly(s in "\\PC{0,40}") {
        if let Err(e) = s.parse::<Rate>() { prop_assert!(!e.is_empty()); }
        if let Err(e) = s.parse::<HumanDuration>() { prop_assert!(!e.is_empty()); }
        if let Err(e) = s.parse::<ByteSize>() { prop_assert!(!e.is_empty()); }
    }

    #[test]
    fn unit_like_text_parses_or_fails_cleanly(
        n in "-?[0-9]{0,25}(\\.[0-9]{0,12})?(e[0-9]{1,3})?",
        unit in "(/s|/m|/h|/d|/|ms|s|m|h|KiB|MiB|GiB|k|M|G|b|)",
    ) {
        let s = format!("{n}{unit}");
        if let Ok(r) = s.parse::<Rate>() {
            prop_assert!(r.count.get() > 0 && !r.per.is_zero());
        }
        let _ = s.parse::<HumanDuration>();
        let _ = s.parse::<ByteSize>();
    }

    #[test]
    fn rates_round_trip(count in 1u32..=1_000_000, unit in "(s|m|h)") {
        let r: Rate = format!("{count}/{unit}").parse().unwrap();
        prop_assert_eq!(r.count.get(), count);
        prop_assert!(!r.interval().is_zero() || count > 1_000);
    }
}
