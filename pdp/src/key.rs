//! Cache keys: a 128-bit XXH3 hash over everything a decision depends on.
//!
//! That is the whole input document except the fields that change on every request and
//! that the policies must not decide on: `context.now_ns` (time dependence is bounded by
//! the policy's `cache_ttl_s` instead), `context.request_id` and `context.session_id`.
//! The bundle revision and the entrypoint seed the hash, so a new bundle never hits an
//! old answer. Values are hashed in a canonical order (objects by sorted key) with a tag
//! and a length before each item, so distinct documents cannot run together.
//!
//! The fields are serialised into a buffer the hasher keeps (one per shard, reused, so
//! keying allocates nothing once warm) and hashed in one XXH3 call: many tiny streaming
//! updates cost more than the hash itself.

use std::borrow::Cow;

use regorus::Value;
use xxhash_rust::xxh3::xxh3_128;

/// The context fields left out of the key.
pub const EXCLUDED_CONTEXT_FIELDS: [&str; 3] = ["now_ns", "request_id", "session_id"];

/// A decision cache key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub u128);

/// Builds keys: holds the revision and entrypoint as a prefix, and a buffer that each
/// [`KeyHasher::start`] rewinds to it.
#[derive(Debug, Clone)]
pub struct KeyHasher {
    buf: Vec<u8>,
    /// Length of the revision + entrypoint prefix.
    prefix: usize,
}

// Type tags, so `"1"` and `1`, `[]` and `{}` differ.
const T_NULL: u8 = 0;
const T_FALSE: u8 = 1;
const T_TRUE: u8 = 2;
const T_NUM: u8 = 3;
const T_STR: u8 = 4;
const T_ARR: u8 = 5;
const T_SET: u8 = 6;
const T_OBJ: u8 = 7;
const T_UNDEF: u8 = 8;
/// JSON text hashed as it streams: its items in text order, then [`T_END`] for each
/// array and object (an item's tags make the stream self-delimiting).
const T_JSON: u8 = 9;
const T_END: u8 = 10;
/// Text hashed as bytes (see [`KeyHasher::raw`]).
const T_RAW: u8 = 11;

impl KeyHasher {
    /// A hasher for one bundle revision and entrypoint.
    pub fn new(revision: &str, entrypoint: &str) -> KeyHasher {
        let mut h = KeyHasher {
            buf: Vec::with_capacity(512),
            prefix: 0,
        };
        h.str(revision);
        h.str(entrypoint);
        h.prefix = h.buf.len();
        h
    }

    /// Begin a new key (forget everything written since the prefix).
    pub fn start(&mut self) -> &mut Self {
        self.buf.truncate(self.prefix);
        self
    }

    /// The key of everything written since [`Self::start`].
    pub fn finish(&self) -> CacheKey {
        CacheKey(xxh3_128(&self.buf))
    }

    fn len(&mut self, n: usize) {
        self.buf.extend_from_slice(&(n as u64).to_le_bytes());
    }

    pub fn tag(&mut self, t: u8) {
        self.buf.push(t);
    }

    pub fn str(&mut self, s: &str) {
        self.tag(T_STR);
        self.len(s.len());
        self.buf.extend_from_slice(s.as_bytes());
    }

    pub fn bool(&mut self, b: bool) {
        self.tag(if b { T_TRUE } else { T_FALSE });
    }

    /// An optional integer, as the JSON number it becomes.
    pub fn int(&mut self, n: i64) {
        self.tag(T_NUM);
        self.buf.extend_from_slice(&n.to_le_bytes());
    }

    pub fn absent(&mut self) {
        self.tag(T_UNDEF);
    }

    /// A list of strings.
    pub fn strs<S: AsRef<str>>(&mut self, list: &[S]) {
        self.tag(T_ARR);
        self.len(list.len());
        for s in list {
            self.str(s.as_ref());
        }
    }

    /// Any regorus value, canonically.
    pub fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.tag(T_NULL),
            Value::Bool(b) => self.bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => self.int(i),
                None => {
                    // Non-integers: hash the canonical text form.
                    self.tag(T_NUM);
                    self.str(&n.format_decimal());
                }
            },
            Value::String(s) => self.str(s),
            Value::Array(a) => {
                self.tag(T_ARR);
                self.len(a.len());
                for item in a.iter() {
                    self.value(item);
                }
            }
            Value::Set(s) => {
                self.tag(T_SET);
                self.len(s.len());
                for item in s.iter() {
                    self.value(item);
                }
            }
            Value::Object(o) => {
                self.tag(T_OBJ);
                self.len(o.len());
                for (k, v) in o.iter_sorted() {
                    self.value(k);
                    self.value(v);
                }
            }
            Value::Undefined => self.absent(),
        }
    }

    /// A `context` object, leaving out [`EXCLUDED_CONTEXT_FIELDS`].
    pub fn context(&mut self, ctx: &Value) {
        let Value::Object(ctx) = ctx else {
            self.value(ctx);
            return;
        };
        self.tag(T_OBJ);
        for (k, v) in ctx.iter_sorted() {
            if matches!(k, Value::String(s) if EXCLUDED_CONTEXT_FIELDS.contains(&&**s)) {
                continue;
            }
            self.value(k);
            self.value(v);
        }
        self.tag(T_OBJ);
    }

    /// An input document, leaving out [`EXCLUDED_CONTEXT_FIELDS`] of its `context`.
    pub fn input_document(&mut self, input: &Value) {
        let Value::Object(top) = input else {
            self.value(input);
            return;
        };
        self.tag(T_OBJ);
        for (k, v) in top.iter_sorted() {
            self.value(k);
            match (k, v) {
                (Value::String(name), Value::Object(_)) if &**name == "context" => self.context(v),
                _ => self.value(v),
            }
        }
    }
}

impl KeyHasher {
    /// JSON text, hashed in one pass without building a value, leaving out the
    /// top-level object's `skip` fields. Objects hash in text order: the same members in
    /// another order (or `1.0` for `1`) make another key — a miss, never a wrong hit.
    ///
    /// # Errors
    /// The text is not one JSON value (serde_json's message, line and column), or nests
    /// deeper than serde_json's limit (128).
    ///
    /// The top-level string members named in `capture` (which must also be in `skip`)
    /// are returned, borrowed from `text` where they hold no escapes.
    pub fn json<'t, const N: usize>(&mut self, text: &'t str, skip: &[&str], capture: [&str; N]) -> Result<[Option<Cow<'t, str>>; N], serde_json::Error> {
        self.tag(T_JSON);
        let mut found = [const { None }; N];
        let mut de = serde_json::Deserializer::from_str(text);
        let top = Json { h: self, skip, capture: Some((&capture, &mut found)) };
        serde::de::DeserializeSeed::deserialize(top, &mut de)?;
        de.end()?;
        Ok(found)
    }

    /// Text hashed as its bytes, unchecked: for a JSON part with nothing to leave out.
    /// Another spelling of the same value is another key (a miss, never a wrong hit), and
    /// text that is not JSON is refused when a miss parses it — a refusal is never cached,
    /// so such text can never hit.
    pub fn raw(&mut self, text: &str) {
        self.tag(T_RAW);
        self.str(text);
    }

    /// The key of an input document under this hasher's revision and entrypoint.
    pub fn document_key(&mut self, input: &Value) -> CacheKey {
        self.start().input_document(input);
        self.finish()
    }
}

/// Where a top-level visit stores the skipped members it captures.
type Capture<'c, 'de, const N: usize> = Option<(&'c [&'c str; N], &'c mut [Option<Cow<'de, str>>; N])>;

/// Streams one JSON value into a [`KeyHasher`].
struct Json<'h, 's, 'c, 'de, const N: usize> {
    h: &'h mut KeyHasher,
    /// Object members to leave out, at this level only.
    skip: &'s [&'s str],
    capture: Capture<'c, 'de, N>,
}

impl<'h, 'de> Json<'h, '_, '_, 'de, 0> {
    /// A nested value: nothing skipped, nothing captured.
    fn nested(h: &'h mut KeyHasher) -> Self {
        Json { h, skip: &[], capture: None }
    }
}

impl<'de, const N: usize> serde::de::DeserializeSeed<'de> for Json<'_, '_, '_, 'de, N> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, const N: usize> serde::de::Visitor<'de> for Json<'_, '_, '_, 'de, N> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.h.tag(T_NULL);
        Ok(())
    }
    fn visit_bool<E>(self, b: bool) -> Result<(), E> {
        self.h.bool(b);
        Ok(())
    }
    fn visit_i64<E>(self, n: i64) -> Result<(), E> {
        self.h.int(n);
        Ok(())
    }
    fn visit_u64<E>(self, n: u64) -> Result<(), E> {
        match i64::try_from(n) {
            Ok(i) => self.h.int(i),
            Err(_) => {
                self.h.tag(T_NUM);
                self.h.str(&n.to_string());
            }
        }
        Ok(())
    }
    fn visit_f64<E>(self, n: f64) -> Result<(), E> {
        self.h.tag(T_NUM);
        self.h.buf.extend_from_slice(&n.to_bits().to_le_bytes());
        Ok(())
    }
    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        self.h.str(s);
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.h.tag(T_ARR);
        while seq.next_element_seed(Json::nested(&mut *self.h))?.is_some() {}
        self.h.tag(T_END);
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.h.tag(T_OBJ);
        while let Some(key) = map.next_key_seed(Key)? {
            if self.skip.contains(&&*key) {
                let slot = self.capture.as_mut().and_then(|(names, found)| {
                    let i = names.iter().position(|n| *n == key)?;
                    found.get_mut(i)
                });
                match slot {
                    Some(slot) => *slot = map.next_value_seed(StrOrSkip)?,
                    None => {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                continue;
            }
            self.h.str(&key);
            map.next_value_seed(Json::nested(&mut *self.h))?;
        }
        self.h.tag(T_END);
        Ok(())
    }
}

/// An object member's name, borrowed from the text unless it holds escapes.
struct Key;

impl<'de> serde::de::DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Key {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a member name")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_string()))
    }
}

/// The string members named `keys` of the top-level object in JSON `text`, borrowed
/// from it where they hold no escapes (not an object, not JSON, or not a string: `None`;
/// a repeated member: the last, as when the text is parsed).
pub fn json_top_strs<'t, const N: usize>(text: &'t str, keys: [&str; N]) -> [Option<Cow<'t, str>>; N] {
    // The hashing visit, into a scratch hasher, with every member of interest skipped
    // and captured.
    KeyHasher::new("", "").json(text, &keys, keys).unwrap_or([const { None }; N])
}

/// A string (borrowed where it can be), or any other value skipped.
struct StrOrSkip;

impl<'de> serde::de::DeserializeSeed<'de> for StrOrSkip {
    type Value = Option<Cow<'de, str>>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for StrOrSkip {
    type Value = Option<Cow<'de, str>>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any value")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(s.to_string())))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key_for_document(revision: &str, entrypoint: &str, input: &Value) -> CacheKey {
        KeyHasher::new(revision, entrypoint).document_key(input)
    }

    fn key(json: &str) -> CacheKey {
        key_for_document("r1", "data.sark.decision", &Value::from_json_str(json).unwrap())
    }

    #[test]
    fn request_specific_context_is_ignored() {
        let a = key(r#"{"user": {"id": "u"}, "context": {"now_ns": 1, "request_id": "a", "session_id": "s", "vpn": true}}"#);
        let b = key(r#"{"user": {"id": "u"}, "context": {"now_ns": 2, "request_id": "b", "vpn": true}}"#);
        assert_eq!(a, b);
    }

    #[test]
    fn every_other_field_counts() {
        let base = key(r#"{"user": {"id": "u", "roles": ["developer"]}, "context": {"vpn": true}}"#);
        for other in [
            r#"{"user": {"id": "u", "roles": ["admin"]}, "context": {"vpn": true}}"#,
            r#"{"user": {"id": "u", "roles": ["developer"]}, "context": {"vpn": false}}"#,
            r#"{"user": {"id": "u", "roles": ["developer"], "teams": []}, "context": {"vpn": true}}"#,
            r#"{"user": {"id": "u", "roles": "developer"}, "context": {"vpn": true}}"#,
            r#"{"user": {"id": "v", "roles": ["developer"]}, "context": {"vpn": true}}"#,
            r#"{"user": {"id": "u", "roles": ["developer"]}, "context": {"vpn": true, "client_ip": "10.0.0.1"}}"#,
        ] {
            assert_ne!(base, key(other), "{other}");
        }
        assert_ne!(
            key_for_document("r1", "data.sark.decision", &Value::new_object()),
            key_for_document("r2", "data.sark.decision", &Value::new_object())
        );
        assert_ne!(
            key_for_document("r1", "data.sark.decision", &Value::new_object()),
            key_for_document("r1", "data.mcp.allow", &Value::new_object())
        );
    }

    #[test]
    fn a_reused_hasher_gives_the_same_keys() {
        let mut h = KeyHasher::new("r1", "data.sark.decision");
        let a = Value::from_json_str(r#"{"user": {"id": "u"}}"#).unwrap();
        let b = Value::from_json_str(r#"{"user": {"id": "v"}}"#).unwrap();
        let ka = h.document_key(&a);
        assert_ne!(h.document_key(&b), ka);
        assert_eq!(h.document_key(&a), ka);
        assert_eq!(ka, key_for_document("r1", "data.sark.decision", &a), "a fresh hasher agrees");
    }

    #[test]
    fn object_key_order_does_not_matter() {
        assert_eq!(key(r#"{"a": 1, "b": [1, 2]}"#), key(r#"{"b": [1, 2], "a": 1}"#));
        assert_ne!(key(r#"{"b": [1, 2]}"#), key(r#"{"b": [2, 1]}"#));
        assert_ne!(key(r#"{"a": "1"}"#), key(r#"{"a": 1}"#));
        assert_ne!(key(r#"{"a": 1.5}"#), key(r#"{"a": 1}"#));
    }
}
