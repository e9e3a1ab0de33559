//! The call type generated for each task: a [`TaskCall`](crate::TaskCall) of its own
//! type, so the generator can add setters for the task's optional arguments.
//!
//! Rust allows inherent methods only on a crate's own types, and `TaskCall` belongs to
//! this crate; so each task gets a newtype in the user's crate. The per-call options are
//! written here once, as a macro, instead of in every generated file.

/// Implements a task's call type, declared by generated code as
/// `pub struct SendEmailCall(TaskCall<SendEmailArgs, EmailReceipt>);`: the per-call
/// options of [`TaskCall`](crate::TaskCall), `.await` to send, and
/// [`IntoTaskCall`](crate::IntoTaskCall) for `Client::send_batch`.
///
/// Used by generated code only.
#[doc(hidden)]
#[macro_export]
macro_rules! __task_call {
    ($name:ident, $args:ty, $result:ty) => {
        impl $name {
            /// Runs no earlier than `delay` from now.
            pub fn countdown(self, delay: ::core::time::Duration) -> Self {
                Self(self.0.countdown(delay))
            }

            /// Runs no earlier than `at`.
            pub fn eta(self, at: $crate::chrono::DateTime<$crate::chrono::Utc>) -> Self {
                Self(self.0.eta(at))
            }

            /// Is revoked if not started within `after` from now.
            pub fn expires(self, after: ::core::time::Duration) -> Self {
                Self(self.0.expires(after))
            }

            /// Is revoked if not started by `at`.
            pub fn expires_at(self, at: $crate::chrono::DateTime<$crate::chrono::Utc>) -> Self {
                Self(self.0.expires_at(at))
            }

            /// Sets the message priority (0–9).
            pub fn priority(self, priority: u8) -> Self {
                Self(self.0.priority(priority))
            }

            /// Sends to `queue` instead of the task's queue.
            pub fn queue(self, queue: impl ::core::convert::Into<::std::string::String>) -> Self {
                Self(self.0.queue(queue))
            }

            /// Uses `id` as the task id.
            pub fn task_id(self, id: impl ::core::convert::Into<::std::string::String>) -> Self {
                Self(self.0.task_id(id))
            }

            /// The options set so far.
            pub fn options(&self) -> &$crate::SendOptions {
                self.0.options()
            }

            /// The arguments as they will be sent.
            pub fn args(&self) -> &$args {
                self.0.args()
            }

            /// Arguments as Celery sends them: positionally, in schema order.
            pub fn encode_args(
                &self,
            ) -> $crate::Result<::std::vec::Vec<$crate::serde_json::Value>> {
                self.0.encode_args()
            }

            /// This call as a signature, to send later or as a workflow step (Celery's
            /// `.s()` with every argument).
            pub fn s(self) -> $crate::canvas::Sig<(), $result> {
                self.0.s()
            }

            /// This call as an immutable signature: as a workflow step it ignores the
            /// previous step's result (Celery's `.si()`).
            pub fn si<I>(self) -> $crate::canvas::Sig<I, $result> {
                self.0.si()
            }

            /// Publishes the task and returns its result handle (the same as `.await`).
            pub async fn send(self) -> $crate::Result<$crate::AsyncResult<$result>> {
                self.0.send().await
            }
        }

        impl ::core::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::fmt::Debug::fmt(&self.0, f)
            }
        }

        impl ::core::convert::From<$name> for $crate::TaskCall<$args, $result> {
            fn from(call: $name) -> Self {
                call.0
            }
        }

        impl $crate::IntoTaskCall for $name {
            type Args = $args;
            type Output = $result;

            fn into_task_call(self) -> $crate::TaskCall<$args, $result> {
                self.0
            }
        }

        impl ::core::future::IntoFuture for $name {
            type Output = $crate::Result<$crate::AsyncResult<$result>>;
            type IntoFuture =
                <$crate::TaskCall<$args, $result> as ::core::future::IntoFuture>::IntoFuture;

            fn into_future(self) -> Self::IntoFuture {
                ::core::future::IntoFuture::into_future(self.0)
            }
        }
    };
}
