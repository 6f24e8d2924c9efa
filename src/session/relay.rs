//! The byte side of a session: one [`Side`] per socket (client, upstream) with the bytes of an
//! incomplete frame carried between reads and the frames waiting to be written.
//!
//! Reads go into one scratch buffer per worker thread; only the tail of a frame that has not
//! fully arrived is copied into the connection's own `carry`. An idle connection therefore
//! holds no read buffer at all, and a busy one reads without allocating.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::wire;

/// Size of the per-thread read buffer (and so of the largest single read).
const SCRATCH_BYTES: usize = 64 * 1024;

/// Room reserved in `carry` when the next frame's length is not known yet.
const CARRY_CHUNK: usize = 4 * 1024;

/// Reads discarded per poll while lingering.
const LINGER_READS_PER_POLL: usize = 16;

/// Write queues larger than this are released once drained.
const KEEP_OUT_CAPACITY: usize = 16 * 1024;

thread_local! {
    static SCRATCH: Cell<BytesMut> = Cell::new(BytesMut::new());
}

/// A socket the relay can drive (TCP, TLS over TCP, awc's boxed upstream socket).
pub trait Io: AsyncRead + AsyncWrite + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + 'static> Io for T {}

/// What a read produced.
pub enum Read {
    /// Bytes are in the buffer.
    Data,
    /// Nothing now; the task is woken when there is.
    Pending,
    /// The peer closed its sending side.
    Eof,
    /// The socket failed.
    Failed(io::Error),
}

/// A read buffer lent out by [`Side::lend`], to be handed back with [`Side::restore`].
pub struct Lent {
    /// The bytes read so far (the start of the first unprocessed frame at offset 0).
    pub buf: BytesMut,
    from_scratch: bool,
}

/// One socket of a session.
pub struct Side {
    io: Box<dyn Io>,
    /// Bytes of a frame that has not fully arrived.
    carry: BytesMut,
    /// How many bytes the frame at the start of `carry` needs in total, when known.
    want: usize,
    /// Whole frames waiting to be written.
    pub out: BytesMut,
    /// Unwritten bytes of the frame at the start of `out` when a write stopped inside it.
    head_left: usize,
    /// Writes failed or the socket is closed: nothing more is written.
    pub dead: bool,
    /// `carry` holds bytes read before the session started, not yet handled.
    unhandled: bool,
    /// Bytes were written since the last flush (TLS buffers them until flushed).
    unflushed: bool,
    /// Our sending side is shut down (closing: FIN sent after the close frame).
    shut: bool,
    /// The peer's close frame has arrived: it sends nothing more.
    pub close_seen: bool,
    /// While lingering: payload bytes of the frame being skipped.
    linger_skip: u64,
}

// === impl Side ===

impl Side {
    /// A side over `io`; `carry` holds bytes already read past the handshake, `out` bytes to
    /// write first (the 101 response).
    pub fn new(io: Box<dyn Io>, carry: BytesMut, out: BytesMut) -> Self {
        let unhandled = !carry.is_empty();
        // An empty read-ahead buffer is the HTTP layer's read buffer (kilobytes of capacity):
        // kept, it would stay allocated for the connection's life, since reads go to the
        // thread's scratch buffer while nothing is carried.
        let carry = if unhandled { carry } else { BytesMut::new() };
        let out = if out.is_empty() { BytesMut::new() } else { out };
        Self {
            io,
            carry,
            want: 0,
            out,
            head_left: 0,
            dead: false,
            unhandled,
            unflushed: false,
            shut: false,
            close_seen: false,
            linger_skip: 0,
        }
    }

    /// Lend a buffer for the next read: the carried bytes when a frame is incomplete, else the
    /// thread's scratch buffer.
    pub fn lend(&mut self) -> Lent {
        if self.carry.is_empty() {
            let mut buf = SCRATCH.with(Cell::take);
            buf.clear();
            buf.reserve(SCRATCH_BYTES);
            Lent { buf, from_scratch: true }
        } else {
            let mut buf = std::mem::take(&mut self.carry);
            let room = self.want.saturating_sub(buf.len()).max(CARRY_CHUNK);
            buf.reserve(room);
            Lent { buf, from_scratch: false }
        }
    }

    /// Read into `lent` (the first call hands over the bytes read before the session started).
    pub fn poll_read(&mut self, cx: &mut Context<'_>, lent: &mut Lent) -> Read {
        if std::mem::take(&mut self.unhandled) {
            return Read::Data;
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut lent.buf) {
            Poll::Pending => Read::Pending,
            Poll::Ready(Ok(0)) => Read::Eof,
            Poll::Ready(Ok(_)) => Read::Data,
            Poll::Ready(Err(e)) => Read::Failed(e),
        }
    }

    /// Take the buffer back after `consumed` bytes of whole frames were handled; `want` is the
    /// total size of the incomplete frame left at the front, when its header is complete.
    pub fn restore(&mut self, mut lent: Lent, consumed: usize, want: usize) {
        self.want = want;
        if lent.from_scratch {
            if consumed < lent.buf.len() {
                self.carry.extend_from_slice(&lent.buf[consumed..]);
            }
            // Cleared without advancing: the scratch buffer keeps its whole capacity from
            // offset 0, so the next `reserve` has nothing to do.
            lent.buf.clear();
            SCRATCH.with(|s| s.set(lent.buf));
            return;
        }
        lent.buf.advance(consumed);
        if lent.buf.is_empty() {
            // Release: the next read goes to the scratch buffer.
            self.carry = BytesMut::new();
        } else {
            self.carry = lent.buf;
        }
    }

    /// Write queued frames; `Ready(Ok(()))` once `out` is empty and flushed.
    pub fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.dead {
            self.out.clear();
            return Poll::Ready(Ok(()));
        }
        while !self.out.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n < self.out.len() {
                self.track_partial_write(n);
            } else {
                self.head_left = 0;
            }
            self.out.advance(n);
            self.unflushed = true;
        }
        if self.unflushed {
            std::task::ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.unflushed = false;
        }
        if self.out.capacity() > KEEP_OUT_CAPACITY {
            self.out = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Lingering close, once everything queued is written: shut our sending side down (the
    /// peer sees the close frame, then end of stream), then read and discard until the peer's
    /// close frame or end of stream. Dropping a socket with unread bytes in its receive queue
    /// makes the kernel send a reset instead of a FIN, and a reset can destroy data the peer
    /// has not read yet (frames this session forwarded to it, or its close frame): lingering
    /// prevents that. `Ready` once the peer has closed (or the socket failed).
    ///
    /// Every read is offered to `charge` (its byte count): discarded bytes are still the
    /// peer's traffic. When `charge` refuses, lingering ends at once (the socket is dropped).
    pub fn poll_linger(&mut self, cx: &mut Context<'_>, charge: &mut dyn FnMut(usize) -> bool) -> Poll<()> {
        if self.dead {
            return Poll::Ready(());
        }
        if !self.shut {
            if Pin::new(&mut self.io).poll_shutdown(cx).is_pending() {
                return Poll::Pending;
            }
            self.shut = true;
        }
        if self.close_seen {
            return Poll::Ready(());
        }
        if !self.carry.is_empty() {
            // The start of a frame read before closing began.
            let carried = std::mem::take(&mut self.carry);
            if self.scan_for_close(&carried) {
                return Poll::Ready(());
            }
        }
        let mut buf = SCRATCH.with(Cell::take);
        let mut reads = 0;
        let polled = loop {
            reads += 1;
            if reads > LINGER_READS_PER_POLL {
                // A peer still sending: let the worker's other connections run first.
                cx.waker().wake_by_ref();
                break Poll::Pending;
            }
            buf.clear();
            buf.reserve(SCRATCH_BYTES);
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut buf) {
                Poll::Ready(Ok(0) | Err(_)) => {
                    self.dead = true;
                    break Poll::Ready(());
                }
                Poll::Ready(Ok(n)) => {
                    if !charge(n) {
                        self.dead = true;
                        break Poll::Ready(());
                    }
                    if self.scan_for_close(&buf) {
                        break Poll::Ready(());
                    }
                }
                Poll::Pending => break Poll::Pending,
            }
        };
        buf.clear();
        SCRATCH.with(|s| s.set(buf));
        polled
    }

    /// Skip through discarded frames; true once a close frame starts in `data`. Partial
    /// headers wait in `carry` (at most one header's worth).
    fn scan_for_close(&mut self, mut data: &[u8]) -> bool {
        loop {
            if self.linger_skip > 0 {
                let n = (self.linger_skip.min(data.len() as u64)) as usize;
                self.linger_skip -= n as u64;
                data = &data[n..];
            }
            if data.is_empty() {
                return false;
            }
            let take = data.len().min(wire::MAX_HEADER_LEN.saturating_sub(self.carry.len()));
            self.carry.extend_from_slice(&data[..take]);
            let Some(h) = wire::parse_header(&self.carry) else {
                data = &data[take..];
                continue;
            };
            if h.opcode == wire::OP_CLOSE {
                self.close_seen = true;
                return true;
            }
            let from_data = h.header_len - (self.carry.len() - take);
            data = &data[from_data..];
            self.carry.clear();
            self.linger_skip = h.len;
        }
    }

    /// Follow frame boundaries through the `n` bytes about to be dropped from `out`.
    fn track_partial_write(&mut self, mut n: usize) {
        let mut pos = 0;
        while n > 0 {
            if self.head_left == 0 {
                match wire::parse_header(&self.out[pos..]) {
                    Some(h) => self.head_left = h.frame_len() as usize,
                    None => return,
                }
            }
            let step = self.head_left.min(n);
            self.head_left -= step;
            n -= step;
            pos += step;
        }
    }

    /// Drop every queued frame not yet started (the one being written is kept whole, so the
    /// stream stays well-formed); used before a slow consumer's close frame.
    pub fn discard_unstarted(&mut self) {
        let keep = if self.head_left > 0 { self.head_left.min(self.out.len()) } else { 0 };
        self.out.truncate(keep);
    }

    /// Part of a frame (its header or payload) has arrived and waits for the rest.
    pub fn has_partial(&self) -> bool {
        !self.carry.is_empty()
    }

    /// Bytes waiting to be written.
    pub fn queued(&self) -> usize {
        self.out.len()
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    fn frame(len: usize, fill: u8) -> Vec<u8> {
        let mut out = BytesMut::new();
        wire::encode(&mut out, wire::OP_BINARY, true, &vec![fill; len], None);
        out.to_vec()
    }

    /// A write that stops inside a frame keeps that frame whole when the queue is cut for a
    /// slow consumer's close: the peer reads only complete frames.
    #[tokio::test]
    async fn discarding_after_a_partial_write_keeps_the_stream_well_formed() {
        let (near, mut far) = tokio::io::duplex(50);
        let mut side = Side::new(Box::new(near), BytesMut::new(), BytesMut::new());
        for fill in 1..=4u8 {
            side.out.extend_from_slice(&frame(30, fill));
        }
        // 50 bytes fit: the first frame (32 bytes) and 18 bytes of the second.
        let first = poll_fn(|cx| Poll::Ready(side.poll_write_out(cx))).await;
        assert!(first.is_pending(), "the duplex buffer is full");
        side.discard_unstarted();
        assert_eq!(side.queued(), 32 - 18, "the rest of the second frame stays queued");
        wire::encode_close(&mut side.out, 4008, "slow", None);
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while side.queued() > 0 {
            let _ = poll_fn(|cx| Poll::Ready(side.poll_write_out(cx))).await;
            let n = tokio::io::AsyncReadExt::read(&mut far, &mut buf).await.expect("read");
            got.extend_from_slice(&buf[..n]);
        }
        while got.len() < 32 + 32 + 8 {
            let n = tokio::io::AsyncReadExt::read(&mut far, &mut buf).await.expect("read");
            got.extend_from_slice(&buf[..n]);
        }
        let mut pos = 0;
        let mut opcodes = Vec::new();
        while let Some(h) = wire::parse_header(&got[pos..]) {
            opcodes.push((h.opcode, got.get(pos + h.header_len).copied()));
            pos += h.frame_len() as usize;
        }
        assert_eq!(pos, got.len(), "only whole frames arrived");
        assert_eq!(opcodes, vec![(wire::OP_BINARY, Some(1)), (wire::OP_BINARY, Some(2)), (wire::OP_CLOSE, Some(0x0f))]);
    }

    /// Bytes a closing peer still sends are offered to the charge; once it refuses, lingering
    /// ends at once instead of reading on.
    #[tokio::test]
    async fn lingering_stops_when_the_discarded_bytes_are_not_paid_for() {
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let mut side = Side::new(Box::new(near), BytesMut::new(), BytesMut::new());
        tokio::io::AsyncWriteExt::write_all(&mut far, &frame(1000, 1)).await.expect("write");
        let mut offered = Vec::new();
        let polled = poll_fn(|cx| {
            Poll::Ready(side.poll_linger(cx, &mut |n| {
                offered.push(n);
                true
            }))
        })
        .await;
        assert!(polled.is_pending(), "still lingering: no close frame yet");
        assert_eq!(offered.iter().sum::<usize>(), 1004, "every byte read was offered");
        tokio::io::AsyncWriteExt::write_all(&mut far, &frame(1000, 2)).await.expect("write");
        let polled = poll_fn(|cx| Poll::Ready(side.poll_linger(cx, &mut |_| false))).await;
        assert!(polled.is_ready() && side.dead, "refused: the socket is given up");
    }

    fn side() -> Side {
        let (near, _far) = tokio::io::duplex(16);
        Side::new(Box::new(near), BytesMut::new(), BytesMut::new())
    }

    /// Lingering skips data frames of any size, fed whole or a byte at a time, and stops at
    /// the close frame.
    #[test]
    fn the_linger_scan_finds_the_close_frame_behind_data_frames() {
        let mut stream = frame(5, 1);
        stream.extend(frame(70_000, 2));
        stream.extend(frame(200, 3));
        let mut close = BytesMut::new();
        wire::encode_close(&mut close, 1000, "", Some([1, 2, 3, 4]));
        let mut whole = side();
        assert!(!whole.scan_for_close(&stream), "no close yet");
        assert!(whole.scan_for_close(&close));
        let mut bytewise = side();
        let mut all = stream.clone();
        all.extend_from_slice(&close);
        let found = all.iter().position(|b| bytewise.scan_for_close(std::slice::from_ref(b)));
        // A masked close header is 6 bytes: found at its last byte.
        assert_eq!(found, Some(stream.len() + 5), "found once the close header is readable");
    }
}
