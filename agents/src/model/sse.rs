//! Server-sent events read from a model's streamed answer.
//!
//! [`events`] is the one way a byte stream becomes events here: eventsource-stream's parser,
//! behind a guard for the stream's first bytes. The SSE standard lets a stream begin with a
//! UTF-8 byte-order mark, and eventsource-stream 0.2.3 panics on one (it cuts one byte off a
//! three-byte character), so a broken or hostile server could panic an agent's call. The guard
//! drops the mark before the parser sees it, which is what the standard says to do with it,
//! and any more marks right after it: the standard would keep a second one as the start of
//! the first line's field name (which then names no field), and the parser would panic on
//! it as on the first.

use std::pin::Pin;
use std::task::{Context, Poll};

use eventsource_stream::{EventStream, Eventsource as _};
use futures::Stream;

/// The UTF-8 byte-order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The events of an SSE byte stream (its chunks cut anywhere, leading byte-order marks
/// dropped). Errors are eventsource-stream's: invalid UTF-8, or the body's own error.
pub fn events<S, B, E>(body: S) -> EventStream<WithoutBom<S>>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
{
    WithoutBom {
        body,
        head: Some(Vec::new()),
    }
    .eventsource()
}

pin_project_lite::pin_project! {
    /// A byte stream with a byte-order mark at its start dropped. Chunks after the first three
    /// bytes pass through untouched, without a copy.
    pub struct WithoutBom<S> {
        #[pin]
        body: S,
        // The first bytes (after any whole marks) while they could still be a mark;
        // `None` once that is decided.
        head: Option<Vec<u8>>,
    }
}

/// A chunk as [`WithoutBom`] passes it on.
pub enum Chunk<B> {
    /// A chunk of the body as it came.
    Whole(B),
    /// The start of the body, its mark (if any) dropped.
    Start(Vec<u8>),
}

impl<B: AsRef<[u8]>> AsRef<[u8]> for Chunk<B> {
    fn as_ref(&self) -> &[u8] {
        match self {
            Self::Whole(bytes) => bytes.as_ref(),
            Self::Start(bytes) => bytes,
        }
    }
}

impl<S, B, E> Stream for WithoutBom<S>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
{
    type Item = Result<Chunk<B>, E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let item = match this.body.poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => bytes,
            Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
            Poll::Ready(None) => {
                // A body of one or two bytes of a mark: they are not text, so they go to the
                // parser, which reports them as invalid UTF-8.
                return Poll::Ready(
                    this.head
                        .take()
                        .filter(|h| !h.is_empty())
                        .map(|h| Ok(Chunk::Start(h))),
                );
            }
            Poll::Pending => return Poll::Pending,
        };
        let Some(mut head) = this.head.take() else {
            return Poll::Ready(Some(Ok(Chunk::Whole(item))));
        };
        let bytes = item.as_ref();
        if head.is_empty() && !bytes.starts_with(&BOM[..bytes.len().min(BOM.len())]) {
            return Poll::Ready(Some(Ok(Chunk::Whole(item))));
        }
        head.extend_from_slice(bytes);
        let marks = head
            .chunks_exact(BOM.len())
            .take_while(|c| *c == BOM)
            .count();
        head.drain(..marks * BOM.len());
        if head.len() < BOM.len() && BOM.starts_with(&head) {
            *this.head = Some(head);
            return Poll::Ready(Some(Ok(Chunk::Start(Vec::new()))));
        }
        Poll::Ready(Some(Ok(Chunk::Start(head))))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use futures::StreamExt as _;

    use super::*;

    /// The events' data read from `body` arriving in chunks of `size` bytes.
    fn read(body: &[u8], size: usize) -> Vec<Result<String, String>> {
        let chunks: Vec<Result<Vec<u8>, std::convert::Infallible>> =
            body.chunks(size).map(|c| Ok(c.to_vec())).collect();
        futures::executor::block_on(
            events(futures::stream::iter(chunks))
                .map(|e| e.map(|e| e.data).map_err(|e| e.to_string()))
                .collect(),
        )
    }

    #[test]
    fn a_leading_byte_order_mark_is_dropped_however_the_body_is_cut() {
        let body = b"\xEF\xBB\xBFdata: one\n\ndata: two\n\n";
        for size in 1..=body.len() {
            assert_eq!(
                read(body, size),
                [Ok("one".to_owned()), Ok("two".to_owned())],
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn leading_marks_are_all_dropped_however_the_body_is_cut() {
        let body = b"\xEF\xBB\xBF\xEF\xBB\xBF\xEF\xBB\xBFdata: one\n\n";
        for size in 1..=body.len() {
            assert_eq!(read(body, size), [Ok("one".to_owned())], "chunks of {size}");
        }
    }

    /// The second input the provider fuzz target found: two marks, the second of which
    /// panicked inside eventsource-stream once the first was dropped.
    #[test]
    fn the_fuzzers_second_crash_reads_without_a_panic() {
        let crash = include_bytes!("../../../fuzz/corpus/provider/two-marks");
        let body = &crash[1..];
        for size in 1..=body.len() {
            let _ = read(body, size);
        }
    }

    #[test]
    fn a_body_without_a_mark_reads_as_it_is() {
        let body = b"data: \xEF\xBB\xBFone\n\n";
        for size in 1..=body.len() {
            assert_eq!(
                read(body, size),
                [Ok("\u{feff}one".to_owned())],
                "chunks of {size}"
            );
        }
    }

    /// The input the provider fuzz target found: it panicked inside eventsource-stream.
    #[test]
    fn the_fuzzers_crash_reads_without_a_panic() {
        let crash = include_bytes!("../../../fuzz/corpus/provider/leading-bom");
        let body = &crash[1..];
        for size in 1..=body.len() {
            let events = read(body, size);
            assert_eq!(
                events.first(),
                Some(&Ok("[DONEel\"=}]}".to_owned())),
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn part_of_a_mark_alone_is_reported_as_invalid_text() {
        let events = read(b"\xEF\xBB", 1);
        assert_eq!(events.len(), 1);
        assert!(events[0].is_err(), "{events:?}");
    }
}
