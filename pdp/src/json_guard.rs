//! One pass over JSON text before anything parses it: how deep it nests, and whether an
//! object names a key twice. RFC 8259 leaves duplicate names' meaning open ("SHOULD be
//! unique") and parsers differ — first wins, last wins — so such a document can mean one
//! thing to the gateway that checked it and another to the policy: it is refused, like one
//! nested deeper than the parsers' recursion allows. Malformed text is left to the parser.

use std::borrow::Cow;
use std::collections::HashSet;

/// The deepest nesting accepted (serde_json's own recursion limit; regorus values are
/// built recursively).
pub const MAX_DEPTH: usize = 128;

/// Why JSON text was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    TooDeep(usize),
    DuplicateKey(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooDeep(max) => write!(f, "JSON nests deeper than {max}"),
            Refusal::DuplicateKey(k) => write!(f, "JSON object names {k:?} twice"),
        }
    }
}

/// The keys of one object so far: a short list, a set past 16 (so a 50,000-key object
/// costs linear time, not quadratic).
#[derive(Default)]
struct Keys<'a> {
    few: Vec<Cow<'a, [u8]>>,
    many: Option<HashSet<Cow<'a, [u8]>>>,
}

impl<'a> Keys<'a> {
    /// False when the key was there already.
    fn insert(&mut self, key: Cow<'a, [u8]>) -> bool {
        if let Some(set) = &mut self.many {
            return set.insert(key);
        }
        if self.few.contains(&key) {
            return false;
        }
        self.few.push(key);
        if self.few.len() > 16 {
            self.many = Some(self.few.drain(..).collect());
        }
        true
    }
}

/// Refuse `text` nesting deeper than `max_depth` or repeating a key in an object (keys
/// compared after unescaping, so `"a"` and `"\u0061"` are the same name).
///
/// # Errors
/// The first [`Refusal`] found.
pub fn check(text: &[u8], max_depth: usize) -> Result<(), Refusal> {
    // Per open container: an object's keys, or None for an array.
    let mut stack: Vec<Option<Keys<'_>>> = Vec::new();
    let mut expect_key = false;
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        match b {
            b'"' => {
                let (start, mut end, mut escaped) = (i + 1, i + 1, false);
                while let Some(&c) = text.get(end) {
                    match c {
                        b'\\' => {
                            escaped = true;
                            end += 2;
                        }
                        b'"' => break,
                        _ => end += 1,
                    }
                }
                if expect_key && let Some(Some(keys)) = stack.last_mut() {
                    let raw = text.get(start..end).unwrap_or(&[]);
                    let key = if escaped {
                        text.get(i..=end).and_then(|quoted| serde_json::from_slice::<String>(quoted).ok()).map_or(Cow::Borrowed(raw), |s| Cow::Owned(s.into_bytes()))
                    } else {
                        Cow::Borrowed(raw)
                    };
                    if !keys.insert(key.clone()) {
                        return Err(Refusal::DuplicateKey(String::from_utf8_lossy(&key).into_owned()));
                    }
                }
                expect_key = false;
                i = end + 1;
                continue;
            }
            b'{' | b'[' => {
                stack.push((b == b'{').then(Keys::default));
                if stack.len() > max_depth {
                    return Err(Refusal::TooDeep(max_depth));
                }
                expect_key = b == b'{';
            }
            b'}' | b']' => {
                stack.pop();
                expect_key = false;
            }
            b',' => expect_key = matches!(stack.last(), Some(Some(_))),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_counted_outside_strings() {
        assert_eq!(check(br#"{"a": [[["x"]]]}"#, 4), Ok(()));
        assert_eq!(check(br#"{"a": [[["x"]]]}"#, 3), Err(Refusal::TooDeep(3)));
        assert_eq!(check(br#"{"a": "[[[[[[\"]]]"}"#, 1), Ok(()));
        assert_eq!(check("[".repeat(10_000).as_bytes(), MAX_DEPTH), Err(Refusal::TooDeep(MAX_DEPTH)));
    }

    #[test]
    fn a_key_named_twice_in_one_object_is_refused() {
        let dup = |t: &str| check(t.as_bytes(), MAX_DEPTH);
        assert_eq!(dup(r#"{"roles": [], "roles": ["admin"]}"#), Err(Refusal::DuplicateKey("roles".into())));
        assert_eq!(dup(r#"{"a": 1, "\u0061": 2}"#), Err(Refusal::DuplicateKey("a".into())), "compared unescaped");
        assert_eq!(dup(r#"{"a": {"b": 1, "b": 2}}"#), Err(Refusal::DuplicateKey("b".into())), "nested objects too");
        // The same key in different objects, in arrays, or as a value is fine.
        assert_eq!(dup(r#"{"a": {"a": "a"}, "b": [{"a": 1}, {"a": 2}], "c": ["a", "a"]}"#), Ok(()));
        assert_eq!(dup(r#"{"a\"b": 1, "a\\b": 2, "ab": 3}"#), Ok(()), "escapes are part of the name");
        // Past 16 keys the set takes over, and still catches a repeat.
        let many: Vec<String> = (0..50_000).map(|i| format!("\"k{i}\": {i}")).collect();
        assert_eq!(dup(&format!("{{{}}}", many.join(","))), Ok(()));
        assert_eq!(dup(&format!("{{{}, \"k7\": 0}}", many.join(","))), Err(Refusal::DuplicateKey("k7".into())));
    }
}
