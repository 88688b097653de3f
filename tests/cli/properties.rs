//! Property tests: any size, rate or duration text is a value that prints back as text meaning
//! the same, or a clear error; never a panic. (The input-line classifier's properties are unit
//! tests in `src/input.rs`.)

use fetchall::{ByteSize, HumanDuration, Rate};
use proptest::prelude::*;

/// A parsed value prints as text that parses back to it.
fn round_trips<T>(value: &T) -> Result<(), TestCaseError>
where
    T: std::str::FromStr<Err = String> + std::fmt::Display + PartialEq + std::fmt::Debug,
{
    let shown = value.to_string();
    let again = shown.parse::<T>();
    prop_assert_eq!(again.as_ref(), Ok(value), "printed as {:?}", shown);
    Ok(())
}

/// `s` as a rate, a duration and a size: each a value that prints back as itself, or a
/// non-empty error message.
fn every_unit_prints_back_or_explains(s: &str) -> Result<(), TestCaseError> {
    match s.parse::<Rate>() {
        Ok(r) => {
            prop_assert!(r.count.get() > 0 && !r.per.is_zero());
            round_trips(&r)?;
        }
        Err(e) => prop_assert!(!e.is_empty()),
    }
    match s.parse::<HumanDuration>() {
        Ok(d) => round_trips(&d)?,
        Err(e) => prop_assert!(!e.is_empty()),
    }
    match s.parse::<ByteSize>() {
        Ok(b) => round_trips(&b)?,
        Err(e) => prop_assert!(!e.is_empty()),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_text_is_a_unit_that_prints_back_or_an_error_message(s in "\\PC{0,40}") {
        every_unit_prints_back_or_explains(&s)?;
    }

    #[test]
    fn unit_like_text_is_a_value_that_prints_back_or_an_error_message(
        n in "-?[0-9]{0,25}(\\.[0-9]{0,12})?(e[0-9]{1,3})?",
        unit in "(/s|/m|/h|/d|/|ms|s|m|h|KiB|MiB|GiB|k|M|G|b|)",
    ) {
        let s = format!("{n}{unit}");
        every_unit_prints_back_or_explains(&s)?;
    }

    #[test]
    fn whole_rates_print_as_written_and_parse_back(count in 1u32..=1_000_000, unit in "(s|m|h)") {
        let written = format!("{count}/{unit}");
        let r: Rate = written.parse().unwrap();
        prop_assert_eq!(r.count.get(), count);
        prop_assert_eq!(r.to_string(), written);
        round_trips(&r)?;
        prop_assert!(!r.interval().is_zero() || count > 1_000);
    }

    #[test]
    fn any_duration_prints_as_text_that_parses_back(
        secs in 0u64..=1_000_000_000,
        nanos in 0u32..1_000_000_000,
    ) {
        round_trips(&HumanDuration(std::time::Duration::new(secs, nanos)))?;
    }

    #[test]
    fn any_byte_size_prints_as_text_that_parses_back(n in 0u64..=1 << 53) {
        round_trips(&ByteSize(n))?;
    }
}
