// A worker that forgets tasks of its component does not compile.
use celerity::{TaskContext, TaskResult};

struct Incomplete;

impl celerity_shop::tasks::Maintenance for Incomplete {
    async fn ping(&self, _ctx: &TaskContext) -> TaskResult<String> {
        Ok("pong".into())
    }
}

fn main() {}
