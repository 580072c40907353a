//! The string table: lock class names, marker labels.

use std::collections::HashMap;

/// An index into the trace's string table (dense, assigned in order of definition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StrId(pub u32);

/// Strings by dense id (0, 1, 2, … in order of first interning), with lookup by text.
///
/// The probes intern into one table for the whole run and hand it to the writer with every
/// event; the writer defines each string in the file just before its first use. The reader
/// rebuilds the same table, so ids mean the same thing in memory and on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StringTable {
    strings: Vec<Box<str>>,
    ids: HashMap<Box<str>, StrId>,
}

impl StringTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of `text`, adding it if new. Strings longer than
    /// [`crate::format::MAX_STRING_LEN`] bytes are cut at a character boundary first.
    pub fn intern(&mut self, text: &str) -> StrId {
        let text = truncate_at_char(text, crate::format::MAX_STRING_LEN);
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        self.push(text.into())
    }

    /// The id `text` already has, if any.
    pub fn lookup(&self, text: &str) -> Option<StrId> {
        self.ids.get(text).copied()
    }

    /// The string with id `id`.
    pub fn get(&self, id: StrId) -> Option<&str> {
        self.strings.get(id.0 as usize).map(|text| &**text)
    }

    /// How many strings it holds (ids are `0..len`).
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    /// All strings with their ids, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (StrId, &str)> {
        let ids = (0..).map(StrId);
        ids.zip(self.strings.iter().map(|text| &**text))
    }

    /// Appends a string as the next id even if it is already present (a file may define
    /// the same text twice; lookup keeps the first id).
    pub(crate) fn push(&mut self, text: Box<str>) -> StrId {
        let id = StrId(self.strings.len() as u32);
        self.ids.entry(text.clone()).or_insert(id);
        self.strings.push(text);
        id
    }

    /// Drops every string with id `len` or above.
    pub(crate) fn truncate(&mut self, len: usize) {
        for text in self.strings.drain(len.min(self.strings.len())..) {
            if self.ids.get(&text).is_some_and(|id| id.0 as usize >= len) {
                self.ids.remove(&text);
            }
        }
    }
}

impl<S: AsRef<str>> FromIterator<S> for StringTable {
    /// Interns each string in order.
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut table = StringTable::new();
        for text in iter {
            table.intern(text.as_ref());
        }
        table
    }
}

fn truncate_at_char(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_dense_and_stable() {
        let mut table = StringTable::new();
        assert_eq!(table.intern("a"), StrId(0));
        assert_eq!(table.intern("b"), StrId(1));
        assert_eq!(table.intern("a"), StrId(0));
        assert_eq!(table.lookup("b"), Some(StrId(1)));
        assert_eq!(table.get(StrId(1)), Some("b"));
        assert_eq!(table.get(StrId(2)), None);
    }

    #[test]
    fn duplicates_from_a_file_keep_the_first_id_and_truncate_cleanly() {
        let mut table = StringTable::new();
        table.push("x".into());
        table.push("y".into());
        table.push("x".into());
        assert_eq!(table.lookup("x"), Some(StrId(0)));
        assert_eq!(table.get(StrId(2)), Some("x"));
        table.truncate(1);
        assert_eq!(table.len(), 1);
        assert_eq!(table.lookup("x"), Some(StrId(0)));
        assert_eq!(table.lookup("y"), None);
    }

    #[test]
    fn long_strings_are_cut_on_a_char_boundary() {
        let long = "é".repeat(40_000); // 80 000 bytes
        let mut table = StringTable::new();
        let id = table.intern(&long);
        let cut = table.get(id).unwrap();
        assert_eq!(cut.len(), crate::format::MAX_STRING_LEN);
        assert!(long.starts_with(cut));
    }
}
