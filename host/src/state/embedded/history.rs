//! Topic history: appending a message, reading a page from a position, and
//! finding where a topic's entries end and what fell off their front.

use fjall::PersistMode;

use super::keys::{Meta, entry_key, scoped};
use super::{Books, MAX_READ, Shared, Store, new_epoch, now_ms, unavailable};
use crate::config::StateRules;
use crate::state::History;
use crate::state::{Entry, Kept, Page, Position, StateError};

impl Shared {
    /// `meta` brought up to date from the topic's entries: the last one
    /// gives `last` and `last_at`, the first one `stored_from`.
    pub(super) fn read_ends(&self, topic_key: &[u8], mut meta: Meta) -> Result<Meta, fjall::Error> {
        let mut prefix = topic_key.to_vec();
        prefix.push(0);
        let seq_of = |key: &[u8]| {
            key.get(prefix.len()..)
                .and_then(|seq| seq.try_into().ok())
                .map(u64::from_be_bytes)
        };
        // Two reads: a topic with one entry has it as both its first and
        // its last, which one double-ended walk would hand out only once.
        if let Some(item) = self.history.prefix(&prefix).next_back() {
            let (key, value) = item.into_inner()?;
            if let Some(seq) = seq_of(&key).filter(|&seq| seq >= meta.last) {
                meta.last = seq;
                let at = value.get(1..9).and_then(|at| at.try_into().ok());
                meta.last_at = meta.last_at.max(at.map_or(0, u64::from_be_bytes));
            }
        }
        if let Some(item) = self.history.prefix(&prefix).next() {
            meta.stored_from = seq_of(&item.key()?).unwrap_or(meta.first);
        } else {
            meta.stored_from = meta.last + 1;
        }
        let kept_from = (meta.last + 1).saturating_sub(meta.keep);
        meta.first = meta.first.max(meta.stored_from).max(kept_from);
        meta.stored_from = meta.stored_from.min(meta.first);
        Ok(meta)
    }

    /// Adds the removal of every entry a topic has on disk to `batch`.
    pub(super) fn forget_entries(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        topic_key: &[u8],
        meta: &Meta,
    ) {
        for seq in meta.stored_from..=meta.last {
            batch.remove(&self.history, entry_key(topic_key, seq));
        }
    }

    /// Removes up to `budget` entries that fell off the front of their
    /// topics' histories; answers how many it removed.
    pub(super) fn trim(&self, books: &mut Books, budget: usize) -> Result<usize, fjall::Error> {
        if books.untrimmed.is_empty() {
            return Ok(0);
        }
        let mut batch = self.db.batch().durability(Some(PersistMode::Buffer));
        let mut removed = 0;
        let mut trimmed = Vec::new();
        for key in books.untrimmed.iter() {
            let Some(meta) = books.topics.get(key) else {
                trimmed.push((key.clone(), None));
                continue;
            };
            let end = meta.first.min(meta.stored_from + (budget - removed) as u64);
            for seq in meta.stored_from..end {
                batch.remove(&self.history, entry_key(key, seq));
            }
            removed += end.saturating_sub(meta.stored_from) as usize;
            trimmed.push((key.clone(), Some(end)));
            if removed >= budget {
                break;
            }
        }
        if removed > 0 {
            batch.commit()?;
        }
        for (key, end) in trimmed {
            let meta = books.topics.get_mut(&key).zip(end);
            match meta {
                Some((meta, end)) if end < meta.first => {
                    meta.stored_from = end.max(meta.stored_from)
                }
                Some((meta, _)) => {
                    meta.stored_from = meta.first;
                    books.untrimmed.remove(&key);
                }
                None => {
                    books.untrimmed.remove(&key);
                }
            }
        }
        Ok(removed)
    }
}

impl History for Store {
    /// Appends under the writers' lock, starting a new epoch when the topic
    /// keeps nothing or its history has expired.
    fn append(
        &self,
        namespace: &str,
        topic: &str,
        entry: Entry<'_>,
        rules: &StateRules,
    ) -> Result<(Position, Option<Vec<u8>>), StateError> {
        let shared = &*self.shared;
        let mut books = shared.lock();
        let now = now_ms();
        let topic_key = scoped(namespace, topic);
        let mut batch = shared.db.batch().durability(Some(PersistMode::Buffer));
        let ttl = rules.history_ttl.as_millis() as u64;
        let keep = u64::from(rules.history_size.max(1));
        let (meta, fresh) = match books.topics.get(&topic_key).copied() {
            Some(meta) if !meta.expired(now) => (meta, false),
            stale => {
                if let Some(stale) = stale {
                    // The new epoch counts from 1 again: none of the old
                    // entries may stay to be read as its own.
                    shared.forget_entries(&mut batch, &topic_key, &stale);
                } else if books.topic_counts.get(namespace).copied().unwrap_or(0)
                    >= rules.history_topics
                {
                    return Err(StateError::HistoryTopics);
                }
                let meta = Meta {
                    epoch: new_epoch(),
                    first: 1,
                    last: 0,
                    last_at: now,
                    ttl,
                    keep,
                    stored_from: 1,
                };
                (meta, true)
            }
        };
        let seq = meta.last + 1;
        let position = Position {
            epoch: meta.epoch,
            seq,
        };
        let composed = entry.compose(position);
        let data = composed.as_deref().unwrap_or(entry.data);
        let mut stored = Vec::with_capacity(9 + data.len());
        stored.push(u8::from(entry.text));
        stored.extend_from_slice(&now.to_be_bytes());
        stored.extend_from_slice(data);
        batch.insert(&shared.history, entry_key(&topic_key, seq), stored);
        let rules_changed = meta.ttl != ttl || meta.keep != keep;
        let meta = Meta {
            first: meta.first.max((seq + 1).saturating_sub(keep)),
            last: seq,
            last_at: now,
            ttl,
            keep,
            ..meta
        };
        if fresh || rules_changed {
            batch.insert(&shared.topics, topic_key.clone(), meta.encode());
        }
        batch.commit().map_err(unavailable)?;
        if meta.stored_from < meta.first {
            books.untrimmed.insert(topic_key.clone());
        }
        if books.topics.insert(topic_key, meta).is_none() {
            *books.topic_counts.entry(namespace.into()).or_default() += 1;
        }
        Ok((position, composed))
    }

    /// Reads a page of a topic's history under the writers' lock.
    fn history(
        &self,
        namespace: &str,
        topic: &str,
        since: Option<Position>,
        limit: u32,
    ) -> Result<Page, StateError> {
        let shared = &*self.shared;
        let topic_key = scoped(namespace, topic);
        // Held while reading, so that no append trims what the page is read from.
        let books = shared.lock();
        let now = now_ms();
        let meta = books
            .topics
            .get(&topic_key)
            .copied()
            .filter(|m| !m.expired(now));
        let limit = u64::from(limit.min(MAX_READ));
        let Some(meta) = meta else {
            return match since {
                // Nothing kept, and the client saw something: it was lost.
                Some(p) if p.seq > 0 => Err(StateError::Lost),
                _ => Ok(Page {
                    epoch: 0,
                    messages: Vec::new(),
                    last: 0,
                }),
            };
        };
        let start = match since {
            None => meta.first.max((meta.last + 1).saturating_sub(limit)),
            Some(p) if p.epoch != meta.epoch || p.seq + 1 < meta.first || p.seq > meta.last => {
                return Err(StateError::Lost);
            }
            Some(p) => p.seq + 1,
        };
        let end = meta.last.min(start.saturating_add(limit).saturating_sub(1));
        let mut messages = Vec::with_capacity(end.saturating_sub(start).saturating_add(1) as usize);
        if start <= end && limit > 0 {
            let range = shared
                .history
                .range(entry_key(&topic_key, start)..=entry_key(&topic_key, end));
            for item in range {
                let (key, value) = item.into_inner().map_err(unavailable)?;
                let seq = u64::from_be_bytes(key[key.len() - 8..].try_into().unwrap_or_default());
                if value.len() < 9 {
                    continue;
                }
                messages.push(Kept {
                    seq,
                    text: value[0] == 1,
                    data: value[9..].to_vec(),
                });
            }
        }
        drop(books);
        Ok(Page {
            epoch: meta.epoch,
            messages,
            last: meta.last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{rules, text};
    use super::*;

    #[test]
    fn history_keeps_its_size_and_reads_from_a_position() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rules = rules();
        let mut last = None;
        for i in 1..=5u8 {
            let (position, _) = store.append("/a", "t", text(&[b'0' + i]), &rules).unwrap();
            assert_eq!(position.seq, u64::from(i));
            last = Some(position);
        }
        let last = last.unwrap();
        let page = store.history("/a", "t", None, 10).unwrap();
        let seqs: Vec<u64> = page.messages.iter().map(|k| k.seq).collect();
        assert_eq!(
            (seqs, page.last, page.epoch),
            (vec![3, 4, 5], 5, last.epoch)
        );
        let since = |seq| Some(Position { seq, ..last });
        assert_eq!(
            store
                .history("/a", "t", since(2), 10)
                .unwrap()
                .messages
                .len(),
            3
        );
        assert_eq!(
            store.history("/a", "t", since(1), 10),
            Err(StateError::Lost)
        );
        assert_eq!(
            store.history("/a", "t", since(6), 10),
            Err(StateError::Lost)
        );
        assert_eq!(
            store.history("/b", "t", since(2), 10),
            Err(StateError::Lost)
        );
        // The position is written into the message where it is asked for.
        let entry = Entry {
            text: true,
            data: b"{\"p\":\"\"}",
            position_at: Some(6),
        };
        let (position, composed) = store.append("/a", "t", entry, &rules).unwrap();
        let expected = format!("{{\"p\":\"{position}\"}}");
        assert_eq!(composed.as_deref(), Some(expected.as_bytes()));
        let page = store.history("/a", "t", since(5), 10).unwrap();
        assert_eq!(page.messages[0].data, expected.as_bytes());
    }

    #[test]
    fn history_reopens_where_its_entries_end_and_sheds_its_front() {
        let dir = tempfile::tempdir().unwrap();
        let rules = rules();
        let store = Store::open(dir.path()).unwrap();
        let mut last = None;
        for i in 0..10u8 {
            last = Some(
                store
                    .append("/a", "t", text(&[b'a' + i]), &rules)
                    .unwrap()
                    .0,
            );
        }
        let last = last.unwrap();
        // Only the first publish wrote the topic's record; the entries say
        // where the history ends.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let page = store.history("/a", "t", None, 10).unwrap();
        let seqs: Vec<u64> = page.messages.iter().map(|k| k.seq).collect();
        assert_eq!(
            (seqs, page.last, page.epoch),
            (vec![8, 9, 10], 10, last.epoch)
        );
        let (next, _) = store.append("/a", "t", text(b"k"), &rules).unwrap();
        assert_eq!(next, Position { seq: 11, ..last });
        // The sweeper removes the entries before the kept ones, and no more.
        let on_disk = |store: &Store| {
            let mut prefix = scoped("/a", "t");
            prefix.push(0);
            store.shared.history.prefix(prefix).count()
        };
        assert_eq!(on_disk(&store), 11);
        while store.shared.sweep_once() {}
        assert_eq!(on_disk(&store), 3);
        assert!(store.shared.lock().untrimmed.is_empty());
        // A smaller history-size is written down, and holds after a reopen.
        let smaller = StateRules {
            history_size: 1,
            ..rules
        };
        store.append("/a", "t", text(b"l"), &smaller).unwrap();
        // A topic whose only entry is its first and its last keeps it too.
        let (single, _) = store.append("/a", "one", text(b"only"), &rules).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let page = store.history("/a", "t", None, 10).unwrap();
        assert_eq!(page.messages.len(), 1);
        assert_eq!(
            (page.messages[0].seq, &page.messages[0].data[..]),
            (12, &b"l"[..])
        );
        let page = store.history("/a", "one", None, 10).unwrap();
        assert_eq!(
            (page.epoch, page.last, page.messages.len()),
            (single.epoch, 1, 1)
        );
    }

    #[test]
    fn a_namespace_keeps_history_for_at_most_history_topics_topics() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rules = StateRules {
            history_size: 1,
            history_topics: 2,
            ..StateRules::default()
        };
        store.append("/a", "t1", text(b"x"), &rules).unwrap();
        store.append("/a", "t2", text(b"x"), &rules).unwrap();
        store.append("/a", "t1", text(b"y"), &rules).unwrap();
        assert_eq!(
            store.append("/a", "t3", text(b"x"), &rules).map(|_| ()),
            Err(StateError::HistoryTopics)
        );
        store.append("/b", "t3", text(b"x"), &rules).unwrap();
    }
}
