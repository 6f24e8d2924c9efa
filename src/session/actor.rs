//! `WsSession`: the connection actor, one per client. It owns its [`Session`], runs the
//! session's pump as a task of its own, receives the control messages (kick, revoke, drain,
//! reload) in its mailbox and stops when the session is over.

use std::cell::RefCell;
use std::rc::Rc;

use actix::{Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler};

use super::messages::{CloseSession, ConfigReloaded, RevocationsChanged};
use super::relay::Side;
use super::{Session, SessionParams};

/// The connection actor.
///
/// The data path is not polled through the actor's context: the session's pump runs as a
/// task of its own on the same worker thread, sharing the session through an `Rc<RefCell>`
/// (the actor and its pump never run at the same time). A wake-up for a socket then polls
/// only the pump, not the actor's mailbox and spawned items; per echoed message that was a
/// tenth of the gateway's user time (mailbox check and waker registration twice per round
/// trip).
pub struct WsSession {
    session: Rc<RefCell<Session>>,
    /// The pump task, aborted if the actor stops first (system shutdown).
    pump: Option<tokio::task::AbortHandle>,
}

// === impl WsSession ===

impl WsSession {
    /// The actor of an admitted client whose upstream is already open; `client` starts with
    /// the 101 response queued.
    pub fn new(p: SessionParams, client: Side, upstream: Side) -> Self {
        Self { session: Rc::new(RefCell::new(Session::new(p, client, upstream))), pump: None }
    }
}

impl Actor for WsSession {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.session.borrow_mut().begin(ctx.address());
        let session = Rc::clone(&self.session);
        let pump = actix::spawn(std::future::poll_fn(move |cx| {
            let mut s = session.borrow_mut();
            s.pumping = true;
            let polled = s.pump(cx);
            s.pumping = false;
            polled
        }));
        self.pump = Some(pump.abort_handle());
        let session = Rc::clone(&self.session);
        ctx.spawn(actix::fut::wrap_future(pump).map(move |ended, _, ctx: &mut Context<Self>| {
            if ended.as_ref().is_err_and(tokio::task::JoinError::is_panic) {
                // A bug, never the client's doing: logged and counted as internal (1011).
                // The unwinding released the session's borrow.
                if let Ok(mut s) = session.try_borrow_mut() {
                    s.internal_failure();
                }
            }
            ctx.stop()
        }));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
        self.session.borrow_mut().end();
    }
}

impl Handler<CloseSession> for WsSession {
    type Result = ();

    fn handle(&mut self, msg: CloseSession, _: &mut Self::Context) {
        self.session.borrow_mut().close_requested(msg.denied);
    }
}

impl Handler<RevocationsChanged> for WsSession {
    type Result = ();

    fn handle(&mut self, _: RevocationsChanged, _: &mut Self::Context) {
        self.session.borrow_mut().catch_up();
    }
}

impl Handler<ConfigReloaded> for WsSession {
    type Result = ();

    fn handle(&mut self, _: ConfigReloaded, _: &mut Self::Context) {
        self.session.borrow_mut().take_policy();
    }
}
