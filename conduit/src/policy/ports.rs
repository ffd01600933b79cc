//! The `ports` field of a rule in the forms people write: `22`, `"22"`, `"1000-2000"`,
//! `[1000, 2000]`, and the `{"start": 1000, "end": 2000}` object earlier hubs stored.
//!
//! Invariant: parsing never panics and yields the range the text names, whatever its
//! order (an inverted range is refused by [`Policy::validate`](super::Policy::validate),
//! which can name the rule). Ports are always written back as `[lo, hi]`, the one form
//! every Bauxite version reads, so a hub can serve nodes older than itself.

use std::fmt;
use std::ops::RangeInclusive;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::SerializeTuple as _;
use serde::{Deserializer, Serializer};

/// What every error message suggests.
const FORMS: &str = r#"write a port or a range: 22, "22", "1000-2000" or [1000, 2000]"#;

/// Parses `"22"` or `"1000-2000"` (spaces around numbers allowed).
pub(crate) fn parse_text(text: &str) -> Result<RangeInclusive<u16>, String> {
    let port = |part: &str| {
        let part = part.trim();
        part.parse::<u16>().map_err(|_| {
            if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
                format!("port {part} is above 65535")
            } else {
                format!("{text:?} is not a port or a range; {FORMS}")
            }
        })
    };
    match text.split_once('-') {
        Some((lo, hi)) => Ok(port(lo)?..=port(hi)?),
        None => {
            let p = port(text)?;
            Ok(p..=p)
        }
    }
}

/// Writes a range the way [`parse_text`] reads it: `"22"` or `"1000-2000"`.
pub(crate) fn to_text(range: &RangeInclusive<u16>) -> String {
    if range.start() == range.end() {
        range.start().to_string()
    } else {
        format!("{}-{}", range.start(), range.end())
    }
}

fn port_from_u64<E: de::Error>(value: u64) -> Result<u16, E> {
    u16::try_from(value).map_err(|_| E::custom(format!("port {value} is above 65535")))
}

struct PortsVisitor;

impl<'de> Visitor<'de> for PortsVisitor {
    type Value = Option<RangeInclusive<u16>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(FORMS)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        let p = port_from_u64(value)?;
        Ok(Some(p..=p))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        let value = u64::try_from(value)
            .map_err(|_| E::custom(format!("port {value} is negative; {FORMS}")))?;
        self.visit_u64(value)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        // JSON has one number type: 22.0 is the integer 22 (JSON Schema agrees).
        if value.fract() == 0.0 && (0.0..=65535.0).contains(&value) {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let p = value as u16;
            return Ok(Some(p..=p));
        }
        Err(E::custom(format!("{value} is not a port; {FORMS}")))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        parse_text(text).map(Some).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let wrong = || {
            de::Error::custom(format!(
                "a port list has exactly two numbers, [low, high]; {FORMS}"
            ))
        };
        let lo: u64 = seq.next_element()?.ok_or_else(wrong)?;
        let hi: u64 = seq.next_element()?.ok_or_else(wrong)?;
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(wrong());
        }
        Ok(Some(port_from_u64(lo)?..=port_from_u64(hi)?))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut start, mut end) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            let slot = match key.as_str() {
                "start" => &mut start,
                "end" => &mut end,
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown key {other:?} in ports; {FORMS}"
                    )));
                }
            };
            *slot = Some(port_from_u64(map.next_value::<u64>()?)?);
        }
        match (start, end) {
            (Some(s), Some(e)) => Ok(Some(s..=e)),
            _ => Err(de::Error::custom(format!(
                "a ports object needs both \"start\" and \"end\"; {FORMS}"
            ))),
        }
    }
}

/// serde `deserialize_with` for `Option<RangeInclusive<u16>>`.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<RangeInclusive<u16>>, D::Error> {
    d.deserialize_option(PortsVisitor)
}

/// serde `serialize_with`: `[lo, hi]` (absent fields are skipped by the caller).
pub(crate) fn serialize<S: Serializer>(
    ports: &Option<RangeInclusive<u16>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match ports {
        None => s.serialize_none(),
        Some(range) => {
            let mut t = s.serialize_tuple(2)?;
            t.serialize_element(range.start())?;
            t.serialize_element(range.end())?;
            t.end()
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::Rule;

    fn ports_of(json: &str) -> Result<Option<std::ops::RangeInclusive<u16>>, String> {
        serde_json::from_str::<Rule>(&format!(r#"{{"ports": {json}}}"#))
            .map(|r| r.ports)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_written_form_reads_the_same_range() {
        for json in [
            "22",
            r#""22""#,
            r#"" 22 ""#,
            "[22, 22]",
            r#"{"start": 22, "end": 22}"#,
        ] {
            assert_eq!(ports_of(json).unwrap(), Some(22..=22), "{json}");
        }
        for json in [
            r#""1000-2000""#,
            r#""1000 - 2000""#,
            "[1000, 2000]",
            r#"{"end": 2000, "start": 1000}"#,
        ] {
            assert_eq!(ports_of(json).unwrap(), Some(1000..=2000), "{json}");
        }
        assert_eq!(ports_of("null").unwrap(), None);
        assert_eq!(serde_json::from_str::<Rule>("{}").unwrap().ports, None);
    }

    #[test]
    fn mistakes_are_named_with_the_forms_that_work() {
        for (json, needle) in [
            (r#""ssh""#, r#""ssh" is not a port or a range"#),
            ("70000", "port 70000 is above 65535"),
            (r#""70000""#, "port 70000 is above 65535"),
            (r#""1-2-3""#, "is not a port or a range"),
            ("-1", "negative"),
            ("[1]", "exactly two numbers"),
            ("[1, 2, 3]", "exactly two numbers"),
            (r#"{"start": 1}"#, "both \"start\" and \"end\""),
            (r#"{"from": 1}"#, "unknown key \"from\""),
            ("true", "1000-2000"),
            ("22.5", "22.5 is not a port"),
        ] {
            let err = ports_of(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn ports_are_written_as_a_pair_every_version_reads() {
        let rule: Rule = serde_json::from_str(r#"{"ports": "1000-2000"}"#).unwrap();
        let json = serde_json::to_string(&rule).unwrap();
        assert!(json.contains(r#""ports":[1000,2000]"#), "{json}");
        let bare: Rule = serde_json::from_str("{}").unwrap();
        assert!(!serde_json::to_string(&bare).unwrap().contains("ports"));
    }

    proptest! {
        /// The text parser is total and agrees with the other forms.
        #[test]
        fn text_parser_never_panics(text in "\\PC{0,24}") {
            let _ = super::parse_text(&text);
        }

        #[test]
        fn forms_agree(lo in any::<u16>(), hi in any::<u16>()) {
            let want = Some(lo..=hi);
            prop_assert_eq!(ports_of(&format!(r#""{lo}-{hi}""#)).unwrap(), want.clone());
            prop_assert_eq!(ports_of(&format!("[{lo}, {hi}]")).unwrap(), want.clone());
            prop_assert_eq!(ports_of(&format!(r#"{{"start": {lo}, "end": {hi}}}"#)).unwrap(), want);
            prop_assert_eq!(ports_of(&lo.to_string()).unwrap(), Some(lo..=lo));
            prop_assert_eq!(super::parse_text(&super::to_text(&(lo..=hi))), Ok(lo..=hi));
        }
    }
}
