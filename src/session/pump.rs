//! The session's pump: one wake-up reads whichever socket is ready, hands the bytes to the
//! frame handling (`frames.rs`), flushes both sides and runs the deadlines, until nothing is
//! ready or the session is over. State, closing and the actor are in the parent module.

use std::task::Poll;
use std::time::Instant;

use super::relay::Read;
use super::{Phase, Session, PASSES_PER_WAKE};
use crate::error::SessionClose;

impl Session {
    /// One read from the client; true when bytes were handled.
    fn read_client(&mut self, cx: &mut std::task::Context<'_>, now: Instant) -> bool {
        let mut lent = self.client.lend();
        let read = self.client.poll_read(cx, &mut lent);
        let (consumed, want) = match read {
            Read::Data => {
                // A reload or revocation that answered before these bytes were read applies
                // to them (the actor's messages may arrive later).
                self.catch_up();
                if self.is_closing() {
                    (lent.buf.len(), 0)
                } else {
                    self.on_client_bytes(&lent.buf, now)
                }
            }
            _ => (0, 0),
        };
        self.client.restore(lent, consumed, want);
        if matches!(read, Read::Data) {
            self.track_partial_frame(consumed > 0, now);
        }
        match read {
            Read::Data => true,
            Read::Pending => false,
            Read::Eof | Read::Failed(_) => {
                self.client_gone();
                false
            }
        }
    }

    /// One read from the upstream; true when bytes were handled.
    fn read_upstream(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        let mut lent = self.upstream.lend();
        let read = self.upstream.poll_read(cx, &mut lent);
        let (consumed, want) = match read {
            Read::Data => self.on_upstream_bytes(&lent.buf),
            _ => (0, 0),
        };
        self.upstream.restore(lent, consumed, want);
        match read {
            Read::Data => true,
            Read::Pending => false,
            Read::Eof | Read::Failed(_) => {
                self.upstream.dead = true;
                self.upstream_ended(SessionClose::UpstreamLost);
                false
            }
        }
    }

    /// Drive both sockets until nothing is ready (see the module docs); `Ready` once the
    /// session is over and its actor should stop.
    pub(super) fn pump(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
        let high_water = self.p.config.limits.outbound_buffer_bytes;
        // A side whose read was pending has its wake-up registered: not read again this call.
        let (mut client_ready, mut upstream_ready) = (true, true);
        // One clock read per wake-up serves the deadlines, buckets and idle tracking of
        // every pass (passes take microseconds).
        let now = Instant::now();
        for _ in 0..PASSES_PER_WAKE {
            if self.next_deadline().is_some_and(|t| t <= now) && self.run_deadlines(now) {
                return Poll::Ready(());
            }
            let mut progress = false;
            if client_ready && self.phase == Phase::Open && self.upstream.queued() < high_water {
                client_ready = self.read_client(cx, now);
                progress |= client_ready;
            }
            if upstream_ready && !self.is_closing() {
                upstream_ready = self.read_upstream(cx);
                progress |= upstream_ready;
            }
            let client_flushed = match self.client.poll_write_out(cx) {
                Poll::Ready(Ok(())) => true,
                Poll::Ready(Err(_)) => {
                    self.client_gone();
                    true
                }
                Poll::Pending => false,
            };
            let upstream_flushed = match self.upstream.poll_write_out(cx) {
                Poll::Ready(Ok(())) => true,
                Poll::Ready(Err(_)) => {
                    self.upstream.dead = true;
                    self.upstream_ended(SessionClose::UpstreamLost);
                    true
                }
                Poll::Pending => false,
            };
            if !self.is_closing() && self.client.queued() > high_water {
                session_event!(warn, self, "slow_consumer_close", "slow_consumer", queued = self.client.queued());
                self.close(SessionClose::SlowConsumer);
                continue;
            }
            if self.is_closing() && client_flushed && upstream_flushed {
                // Bytes a closing client still sends are charged: past the byte bucket the
                // socket is dropped instead of read further.
                let inbound = &mut self.inbound;
                let mut charge = |n: usize| inbound.charge_lingering(n, now);
                let client_done = self.client.poll_linger(cx, &mut charge).is_ready();
                let upstream_done = self.upstream.poll_linger(cx, &mut |_| true).is_ready();
                if client_done && upstream_done {
                    return Poll::Ready(());
                }
            }
            if !progress {
                self.arm_timer(cx);
                self.publish();
                return Poll::Pending;
            }
        }
        // Still busy: let the worker's other connections run, then continue.
        self.publish();
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Publish the message counts for the admin API (once per wake-up, not per frame).
    fn publish(&self) {
        self.stats.messages_in.store(self.messages_in, std::sync::atomic::Ordering::Relaxed);
        self.stats.messages_out.store(self.messages_out, std::sync::atomic::Ordering::Relaxed);
    }
}
