//! Implementations of the shop's worker traits.
//!
//! Each component is built fresh for every task (prototype scope) from singletons that
//! live as long as the worker: the session store, the outbox and the user directory.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use celerity::{BuildError, Bytes, Component, TaskContext, TaskError, TaskResult};
use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::tasks::{
    Accounts, EmailAddress, EmailReceipt, Mailer, Maintenance, Order, OrderOutcome, OrderStatus,
    OrderSummary, Orders, Report, ReportFormat, Reports, Role, TasksRegistry, User,
};

/// Locks a mutex whose data stays consistent even if a holder panicked (every critical
/// section here is a single insert, remove or counter update).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Web sessions and when each was last seen (a singleton).
#[derive(Debug, Default)]
pub struct SessionStore {
    sessions: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl SessionStore {
    /// Records activity of session `id` at `at`.
    pub fn touch(&self, id: &str, at: DateTime<Utc>) {
        lock(&self.sessions).insert(id.to_owned(), at);
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The mail server's outbox and connection pool (a singleton standing in for an SMTP
/// client).
#[derive(Debug, Default)]
pub struct Outbox {
    sent: Mutex<Vec<(String, String)>>,
    checked_out: Mutex<usize>,
}

impl Outbox {
    /// `(recipient, subject)` of every message sent so far.
    pub fn sent(&self) -> Vec<(String, String)> {
        lock(&self.sent).clone()
    }

    /// Connections currently checked out: 0 whenever no task is running, because every
    /// `SmtpMailer` returns its connection in `cleanup`, whatever the task's outcome.
    pub fn connections_in_use(&self) -> usize {
        *lock(&self.checked_out)
    }

    fn checkout(&self) {
        *lock(&self.checked_out) += 1;
    }

    fn release(&self) {
        *lock(&self.checked_out) -= 1;
    }
}

/// Registered users by email (a singleton standing in for a database).
#[derive(Debug, Default)]
pub struct UserDirectory {
    users: Mutex<BTreeMap<String, User>>,
}

/// Runs `tasks.ping`, `tasks.alert_ops` and `tasks.cleanup_sessions`.
pub struct MaintenanceTasks {
    sessions: Arc<SessionStore>,
}

impl Component for MaintenanceTasks {
    type Deps = Arc<SessionStore>;

    async fn build(sessions: Arc<SessionStore>, _ctx: &TaskContext) -> Result<Self, BuildError> {
        Ok(MaintenanceTasks { sessions })
    }
}

impl Maintenance for MaintenanceTasks {
    async fn ping(&self, _ctx: &TaskContext) -> TaskResult<String> {
        Ok("pong".into())
    }

    async fn alert_ops(
        &self,
        _ctx: &TaskContext,
        task_id: String,
        channel: String,
    ) -> TaskResult<String> {
        let alert = format!("{channel}: task {task_id} failed");
        tracing::warn!("{alert}");
        Ok(alert)
    }

    async fn cleanup_sessions(
        &self,
        _ctx: &TaskContext,
        max_idle_minutes: u32,
        dry_run: bool,
    ) -> TaskResult<u64> {
        let cutoff = Utc::now() - chrono::Duration::minutes(i64::from(max_idle_minutes));
        let mut sessions = lock(&self.sessions.sessions);
        let idle: Vec<String> = sessions
            .iter()
            .filter(|(_, seen)| **seen < cutoff)
            .map(|(id, _)| id.clone())
            .collect();
        if !dry_run {
            for id in &idle {
                sessions.remove(id);
            }
        }
        Ok(idle.len() as u64)
    }
}

/// Runs `tasks.send_email` and `tasks.email_summary` on a connection checked out of the
/// outbox's pool for the length of one execution.
pub struct SmtpMailer {
    outbox: Arc<Outbox>,
}

impl Component for SmtpMailer {
    type Deps = Arc<Outbox>;

    async fn build(outbox: Arc<Outbox>, _ctx: &TaskContext) -> Result<Self, BuildError> {
        outbox.checkout();
        Ok(SmtpMailer { outbox })
    }

    /// Returns the connection to the pool, on success and failure alike.
    async fn cleanup(self) {
        self.outbox.release();
    }
}

impl SmtpMailer {
    /// Queues one message to every recipient; refuses an address without `@`.
    fn deliver(
        &self,
        ctx: &TaskContext,
        recipients: &[&EmailAddress],
        subject: &str,
    ) -> TaskResult<EmailReceipt> {
        if let Some(bad) = recipients.iter().find(|r| !r.email.contains('@')) {
            return Err(TaskError::new(
                "InvalidAddress",
                format!("`{}` is not an email address", bad.email),
            ));
        }
        let mut sent = lock(&self.outbox.sent);
        for recipient in recipients {
            sent.push((recipient.email.clone(), subject.to_owned()));
        }
        Ok(EmailReceipt {
            message_id: format!("<{}@shop.example>", ctx.id),
            accepted: recipients.iter().map(|r| r.email.clone()).collect(),
            queued_at: Utc::now(),
        })
    }
}

impl Mailer for SmtpMailer {
    async fn send_email(
        &self,
        ctx: &TaskContext,
        to: EmailAddress,
        subject: String,
        _body: String,
        cc: Vec<EmailAddress>,
        _tags: BTreeMap<String, String>,
    ) -> TaskResult<EmailReceipt> {
        let recipients: Vec<&EmailAddress> = std::iter::once(&to).chain(&cc).collect();
        self.deliver(ctx, &recipients, &subject)
    }

    async fn email_summary(
        &self,
        ctx: &TaskContext,
        summary: OrderSummary,
        to: EmailAddress,
    ) -> TaskResult<EmailReceipt> {
        let subject = format!(
            "{} orders, {} accepted, {:.2} in total",
            summary.orders,
            summary.accepted,
            summary.total_cents as f64 / 100.0
        );
        self.deliver(ctx, &[&to], &subject)
    }
}

/// Runs `tasks.create_user`.
pub struct AccountService {
    directory: Arc<UserDirectory>,
}

impl Component for AccountService {
    type Deps = Arc<UserDirectory>;

    async fn build(directory: Arc<UserDirectory>, _ctx: &TaskContext) -> Result<Self, BuildError> {
        Ok(AccountService { directory })
    }
}

impl Accounts for AccountService {
    async fn create_user(
        &self,
        _ctx: &TaskContext,
        email: String,
        role: Role,
        _display_name: Option<String>,
    ) -> TaskResult<User> {
        let mut users = lock(&self.directory.users);
        if users.contains_key(&email) {
            return Err(TaskError::new(
                "UserExists",
                format!("a user with email {email} already exists"),
            ));
        }
        let user = User {
            id: Uuid::new_v4(),
            email: email.clone(),
            role,
            created_on: Utc::now().date_naive(),
        };
        users.insert(email, user.clone());
        Ok(user)
    }
}

/// Runs `tasks.process_order` and `tasks.summarize_orders`; confirms accepted orders by
/// email through the injected `TasksRegistry`, so the email task is a child of the order
/// task.
pub struct OrderDesk {
    tasks: TasksRegistry,
}

impl Component for OrderDesk {
    type Deps = TasksRegistry;

    async fn build(tasks: TasksRegistry, _ctx: &TaskContext) -> Result<Self, BuildError> {
        Ok(OrderDesk { tasks })
    }
}

impl Orders for OrderDesk {
    async fn process_order(
        &self,
        _ctx: &TaskContext,
        order: Order,
        notify: bool,
    ) -> TaskResult<OrderOutcome> {
        let total_cents = order
            .lines
            .iter()
            .map(|l| i64::from(l.quantity) * l.unit_price_cents)
            .sum();
        let mut warnings = Vec::new();
        if order.shipping.is_none() {
            warnings.push("no shipping address: collection in store".to_owned());
        }
        let status = if order.lines.is_empty() || order.lines.iter().any(|l| l.quantity == 0) {
            OrderStatus::Rejected
        } else if order.lines.iter().any(|l| l.sku.starts_with("BO-")) {
            OrderStatus::Backordered
        } else {
            OrderStatus::Accepted
        };
        let customer_email = order.metadata.get("email").filter(|_| notify);
        if let (Some(email), OrderStatus::Accepted) = (customer_email, status) {
            let to = EmailAddress {
                email: email.clone(),
                name: None,
            };
            let subject = format!("Order {} accepted", order.id);
            self.tasks
                .send_email(to, subject, String::new())
                .await
                .map_err(|e| TaskError::new("NotificationFailed", e.to_string()))?;
        }
        Ok(OrderOutcome {
            order_id: order.id,
            status,
            total_cents,
            warnings,
        })
    }

    async fn summarize_orders(
        &self,
        _ctx: &TaskContext,
        outcomes: Vec<OrderOutcome>,
    ) -> TaskResult<OrderSummary> {
        let accepted = outcomes
            .iter()
            .filter(|o| o.status == OrderStatus::Accepted)
            .count();
        Ok(OrderSummary {
            orders: outcomes.len() as u32,
            accepted: accepted as u32,
            total_cents: outcomes.iter().map(|o| o.total_cents).sum(),
            warnings: outcomes.into_iter().flat_map(|o| o.warnings).collect(),
        })
    }
}

/// Runs `tasks.generate_report`.
pub struct ReportBuilder;

impl Component for ReportBuilder {
    type Deps = ();

    async fn build(_deps: (), _ctx: &TaskContext) -> Result<Self, BuildError> {
        Ok(ReportBuilder)
    }
}

impl Reports for ReportBuilder {
    async fn generate_report(
        &self,
        _ctx: &TaskContext,
        name: String,
        since: NaiveDate,
        format: ReportFormat,
        until: Option<NaiveDate>,
        filters: serde_json::Value,
    ) -> TaskResult<Report> {
        let until = until.unwrap_or_else(|| Utc::now().date_naive());
        if until < since {
            return Err(TaskError::python(
                "ValueError",
                "builtins",
                format!("report range is empty: {since} is after {until}"),
            ));
        }
        let days = (until - since).num_days() as u64 + 1;
        let region = filters
            .get("region")
            .and_then(|r| r.as_str())
            .unwrap_or("all");
        let mut content = String::from("day,region,orders\n");
        for offset in 0..days {
            let day = since + chrono::Duration::days(offset as i64);
            content.push_str(&format!("{day},{region},{}\n", offset * 3));
        }
        Ok(Report {
            name,
            format,
            rows: days,
            totals: BTreeMap::from([(
                "orders".to_owned(),
                (0..days).map(|d| d as f64 * 3.0).sum(),
            )]),
            content: Bytes(content.into_bytes()),
        })
    }
}
