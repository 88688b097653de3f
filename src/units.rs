//! Human-readable quantities on the command line and in the config file: request rates
//! (`10/s`), durations (`30s`, `250ms`) and byte sizes (`10MiB`).
//!
//! Each type parses with `FromStr` (clap) and deserializes from a string (TOML), so both
//! front ends accept the same spelling and report the same error text. Parsing never panics on
//! any input; see the property tests in `tests/cli/properties.rs`.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// A request rate: `count` requests per `per` (`10/s`, `600/m`, `5000/h`, `2.5/s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Rate {
    /// Requests allowed per period; never zero.
    pub count: NonZeroU32,
    /// The period the count refers to; never zero.
    pub per: Duration,
}

impl Rate {
    /// The spacing between two requests at this rate (the GCRA emission interval).
    pub fn interval(&self) -> Duration {
        self.per / self.count.get()
    }

    /// Requests per second, for display and benchmarks.
    pub fn per_second(&self) -> f64 {
        f64::from(self.count.get()) / self.per.as_secs_f64()
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (count, unit) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid rate `{s}`: expected N/s, N/m or N/h, e.g. 10/s"))?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => {
                return Err(format!(
                    "invalid rate `{s}`: unknown unit `{other}` (use s, m or h)"
                ));
            }
        };
        let count: f64 = count
            .trim()
            .parse()
            .map_err(|_| format!("invalid rate `{s}`: `{}` is not a number", count.trim()))?;
        if !count.is_finite() || count <= 0.0 {
            return Err(format!(
                "invalid rate `{s}`: the count must be greater than zero"
            ));
        }
        if count > 1_000_000.0 {
            return Err(format!("invalid rate `{s}`: at most 1000000 per period"));
        }
        // Fractional counts (`0.5/s`) become a whole count over a longer period, so the limiter
        // keeps working in integers: 0.5/s == 1 per 2 s, 2.5/s == 5 per 2 s.
        let off_whole = |scale: u32| {
            let x = count * f64::from(scale);
            (x - x.round()).abs() > 1e-6
        };
        let mut scale = 1u32;
        while off_whole(scale) && scale < 1000 {
            scale *= 10;
        }
        if off_whole(scale) {
            return Err(format!(
                "invalid rate `{s}`: at most three decimals (e.g. 0.125/s; for slower rates use /m or /h)"
            ));
        }
        let mut whole = (count * f64::from(scale)).round() as u32;
        // Canonical form: 10.05/s is 1005 per 100 s however it was rounded to get there, so a
        // rate printed and parsed again is the same rate.
        while scale > 1 && whole.is_multiple_of(10) {
            whole /= 10;
            scale /= 10;
        }
        let count = NonZeroU32::new(whole)
            .ok_or_else(|| format!("invalid rate `{s}`: the count must be greater than zero"))?;
        Ok(Rate {
            count,
            per: per * scale,
        })
    }
}

impl TryFrom<String> for Rate {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for Rate {
    /// As it was written: `10/s`, `600/m`, `2.5/m` (stored as 25 per 10 minutes), `0.001/h`;
    /// the output always parses back to the same rate.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole_secs = self.per.subsec_nanos() == 0;
        for (unit_secs, unit) in [(3600, "h"), (60, "m"), (1, "s")] {
            let secs = self.per.as_secs();
            if !whole_secs || !secs.is_multiple_of(unit_secs) {
                continue;
            }
            // `from_str` scales a fractional count by 10, 100 or 1000.
            let scale = secs / unit_secs;
            if matches!(scale, 1 | 10 | 100 | 1000) {
                let count = f64::from(self.count.get()) / scale as f64;
                return write!(f, "{count}/{unit}");
            }
        }
        write!(f, "{}/s", self.per_second())
    }
}

/// A duration written the human way: `30s`, `250ms`, `1m 30s`, or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "DurationRepr")]
pub struct HumanDuration(pub Duration);

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationRepr {
    Seconds(f64),
    Text(String),
}

impl TryFrom<DurationRepr> for HumanDuration {
    type Error = String;
    fn try_from(r: DurationRepr) -> Result<Self, Self::Error> {
        match r {
            DurationRepr::Seconds(s) => seconds(s, &s.to_string()),
            DurationRepr::Text(t) => t.parse(),
        }
    }
}

fn seconds(secs: f64, shown: &str) -> Result<HumanDuration, String> {
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("invalid duration `{shown}`"));
    }
    Ok(HumanDuration(Duration::from_secs_f64(secs)))
}

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(secs) = s.parse::<f64>() {
            return seconds(secs, s);
        }
        humantime::parse_duration(s)
            .map(HumanDuration)
            .map_err(|e| format!("invalid duration `{s}`: {e} (examples: 30s, 250ms, 2m)"))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// A byte count: `1024`, `64KiB`, `10MiB`, `1GB` (k/M/G are powers of 1000, Ki/Mi/Gi of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SizeRepr")]
pub struct ByteSize(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Bytes(u64),
    Text(String),
}

impl TryFrom<SizeRepr> for ByteSize {
    type Error = String;
    fn try_from(r: SizeRepr) -> Result<Self, Self::Error> {
        match r {
            SizeRepr::Bytes(n) => Ok(ByteSize(n)),
            SizeRepr::Text(t) => t.parse(),
        }
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let num: f64 = num
            .parse()
            .map_err(|_| format!("invalid size `{t}`: expected e.g. 1024, 64KiB, 10MiB"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "ki" | "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mi" | "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gi" | "gib" => 1 << 30,
            other => return Err(format!("invalid size `{t}`: unknown unit `{other}`")),
        };
        let bytes = num * mult as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 / 2.0 {
            return Err(format!("invalid size `{t}`: out of range"));
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", n >> 20)
        } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", n >> 10)
        } else {
            write!(f, "{n}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_written_and_refuse_what_is_not_a_rate() {
        let r: Rate = "10/s".parse().unwrap();
        assert_eq!(r.interval(), Duration::from_millis(100));
        let r: Rate = "0.5/s".parse().unwrap();
        assert_eq!(r.interval(), Duration::from_secs(2));
        let r: Rate = "5000/h".parse().unwrap();
        assert_eq!(r.to_string(), "5000/h");
        for text in ["2.5/m", "1.5/h", "0.001/h", "0.5/s", "600/m", "12.25/s"] {
            let r: Rate = text.parse().unwrap();
            assert_eq!(r.to_string(), text);
            assert_eq!(r.to_string().parse::<Rate>().unwrap(), r);
        }
        assert!("0/s".parse::<Rate>().is_err());
        assert!("10".parse::<Rate>().is_err());
        assert!("10/d".parse::<Rate>().is_err());
        assert!("NaN/s".parse::<Rate>().is_err());
        assert!(
            "0.0101/s"
                .parse::<Rate>()
                .unwrap_err()
                .contains("three decimals")
        );
        assert_eq!("12.346/s".parse::<Rate>().unwrap().to_string(), "12.346/s");
    }

    #[test]
    fn durations_and_sizes_parse_in_human_units() {
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            "1.5".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(1500)
        );
        assert!("-1".parse::<HumanDuration>().is_err());
        assert_eq!("10MiB".parse::<ByteSize>().unwrap().0, 10 << 20);
        assert_eq!("64k".parse::<ByteSize>().unwrap().0, 64_000);
        assert!("ten".parse::<ByteSize>().is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// What a unit prints, it parses back to the same value.
        #[test]
        fn units_round_trip_through_their_display(
            bytes in 0u64..(1 << 50),
            millis in 0u64..10_000_000_000,
            count in 1u32..=1_000_000,
            per in proptest::sample::select(vec![1u64, 60, 3600]),
        ) {
            proptest::prop_assert_eq!(ByteSize(bytes).to_string().parse::<ByteSize>().unwrap(), ByteSize(bytes));
            let d = HumanDuration(Duration::from_millis(millis));
            proptest::prop_assert_eq!(d.to_string().parse::<HumanDuration>().unwrap(), d);
            let r = Rate { count: NonZeroU32::new(count).unwrap(), per: Duration::from_secs(per) };
            proptest::prop_assert_eq!(r.to_string().parse::<Rate>().unwrap(), r);
        }

        /// No text makes a unit parser panic.
        #[test]
        fn any_text_is_a_unit_or_an_error(text in "\\PC{0,30}") {
            let _ = text.parse::<ByteSize>();
            let _ = text.parse::<HumanDuration>();
            let _ = text.parse::<Rate>();
        }
    }
}
