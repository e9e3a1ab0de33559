// A chord body receives every result of its header, as a `Vec`: a body whose first
// argument is a single result (`create_user` takes one `String`, the header of `ping`
// calls gives a `Vec<String>`) does not compile.
use celerity::canvas::{chord, group};

fn main() {
    let app = celerity::App::memory();
    let tasks = celerity_shop::tasks::TasksRegistry::new(app.client());
    let header = group((0..3).map(|_| tasks.ping().s()));
    let _workflow = chord(header, tasks.create_user_s());
}
