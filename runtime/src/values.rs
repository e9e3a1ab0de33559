//! Wire types of the schema language's scalars that are not plain Rust types.

use std::fmt;

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `bytes` in a schema: base64 text on the wire. Reads both plain base64 strings and
/// kombu's JSON envelope `{"__type__": "bytes", "__value__": "…"}`.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(bytes: Vec<u8>) -> Self {
        Bytes(bytes)
    }
}

impl From<&[u8]> for Bytes {
    fn from(bytes: &[u8]) -> Self {
        Bytes(bytes.to_vec())
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Text(String),
            Envelope {
                #[serde(rename = "__value__")]
                value: String,
            },
        }
        let text = match Wire::deserialize(deserializer)? {
            Wire::Text(text) | Wire::Envelope { value: text } => text,
        };
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Bytes)
            .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

impl schemars::JsonSchema for Bytes {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Bytes".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "contentEncoding": "base64" })
    }
}

/// `decimal` in a schema: an exact decimal number, for money and anything else a float
/// would round. On the wire it is kombu's envelope `{"__type__": "decimal", "__value__":
/// "19.99"}`, which Python Celery reads as `decimal.Decimal('19.99')`; it reads that
/// envelope, decimal text (`"19.99"`) and JSON numbers.
///
/// ```
/// let price: celerity::Decimal = "19.99".parse().unwrap();
/// assert_eq!(price, celerity::Decimal::new(1999, 2));
/// assert_eq!(price.to_string(), "19.99");
/// let total = *price + *celerity::Decimal::new(1, 2);
/// assert_eq!(total.to_string(), "20.00");
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Decimal(pub rust_decimal::Decimal);

impl Decimal {
    /// `num × 10^-scale`: `Decimal::new(1999, 2)` is `19.99`.
    pub fn new(num: i64, scale: u32) -> Self {
        Decimal(rust_decimal::Decimal::new(num, scale))
    }
}

impl fmt::Debug for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Decimal({})", self.0)
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::str::FromStr for Decimal {
    type Err = rust_decimal::Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.parse()
            .or_else(|_| rust_decimal::Decimal::from_scientific(text))
            .map(Decimal)
    }
}

impl From<rust_decimal::Decimal> for Decimal {
    fn from(value: rust_decimal::Decimal) -> Self {
        Decimal(value)
    }
}

impl From<Decimal> for rust_decimal::Decimal {
    fn from(value: Decimal) -> Self {
        value.0
    }
}

impl From<i64> for Decimal {
    fn from(value: i64) -> Self {
        Decimal(value.into())
    }
}

impl std::ops::Deref for Decimal {
    type Target = rust_decimal::Decimal;
    fn deref(&self) -> &rust_decimal::Decimal {
        &self.0
    }
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("__type__", "decimal")?;
        map.serialize_entry("__value__", &self.0.to_string())?;
        map.end()
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Text(String),
            Integer(i64),
            Unsigned(u64),
            Float(f64),
            Envelope {
                #[serde(rename = "__value__")]
                value: String,
            },
        }
        let text = match Wire::deserialize(deserializer)? {
            Wire::Text(text) | Wire::Envelope { value: text } => text,
            Wire::Integer(n) => return Ok(Decimal(n.into())),
            Wire::Unsigned(n) => return Ok(Decimal(n.into())),
            // A float's shortest form: `0.1` reads as 0.1, not as the binary fraction.
            Wire::Float(f) => f.to_string(),
        };
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("invalid decimal {text:?}: {e}")))
    }
}

impl schemars::JsonSchema for Decimal {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Decimal".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "An exact decimal: kombu's {\"__type__\": \"decimal\", \"__value__\": \"19.99\"}, decimal text or a number",
            "anyOf": [
                {
                    "type": "object",
                    "properties": {
                        "__type__": { "const": "decimal" },
                        "__value__": { "type": "string" }
                    },
                    "required": ["__type__", "__value__"]
                },
                { "type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$" },
                { "type": "number" }
            ]
        })
    }
}

/// Decodes a schema default from its JSON form. The build checked the value against the
/// type, so failure means the generated code and the runtime disagree on a type's wire form.
pub fn default_value<T: serde::de::DeserializeOwned>(json: &str) -> T {
    match serde_json::from_str(json) {
        Ok(value) => value,
        Err(error) => panic!(
            "celerity: the schema default {json} does not decode as {}: {error}",
            std::any::type_name::<T>()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_travel_as_base64_and_read_kombu_envelopes() {
        let bytes = Bytes(b"hi".to_vec());
        assert_eq!(serde_json::to_string(&bytes).unwrap(), "\"aGk=\"");
        let envelope: Bytes =
            serde_json::from_str(r#"{"__type__": "bytes", "__value__": "aGk="}"#).unwrap();
        assert_eq!(envelope, bytes);
        assert!(serde_json::from_str::<Bytes>("\"***\"").is_err());
    }

    #[test]
    fn decimals_travel_in_kombus_envelope_and_read_every_form_exactly() {
        let price = Decimal::new(1999, 2);
        assert_eq!(
            serde_json::to_string(&price).unwrap(),
            r#"{"__type__":"decimal","__value__":"19.99"}"#
        );
        let read = |json: &str| serde_json::from_str::<Decimal>(json).map(|d| d.to_string());
        assert_eq!(
            read(r#"{"__type__": "decimal", "__value__": "12345678901234567890.12"}"#).unwrap(),
            "12345678901234567890.12"
        );
        assert_eq!(read(r#""19.90""#).unwrap(), "19.90", "the scale is kept");
        assert_eq!(
            read("0.1").unwrap(),
            "0.1",
            "a float reads as its shortest form"
        );
        assert_eq!(read("-7").unwrap(), "-7");
        assert_eq!(read(r#""1.5e3""#).unwrap(), "1500");
        let error = read(r#""19,99""#).unwrap_err().to_string();
        assert!(error.contains(r#"invalid decimal "19,99""#), "{error}");
    }
}
