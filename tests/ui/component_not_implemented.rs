// Registering a type that does not implement the component's worker trait does not compile.
struct NotAWorker;

impl celerity::Component for NotAWorker {
    async fn build(_scope: &celerity::Scope<'_>) -> Result<Self, celerity::BuildError> {
        Ok(NotAWorker)
    }
}

fn main() {
    let app = celerity::App::memory();
    let mut worker = app.worker();
    celerity_shop::tasks::register_orders::<NotAWorker>(&mut worker);
}
