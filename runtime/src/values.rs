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
}
