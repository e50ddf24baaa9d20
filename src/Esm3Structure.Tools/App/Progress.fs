namespace Esm3Structure.App

open Spectre.Console
open Esm3Structure.Training

/// The scripts' one progress bar (Spectre.Console): a task name, bar, percentage, elapsed and remaining time. Used
/// by training (`Trainer.terminalDisplay`, installed by `Cli.run`) and generation.
module Progress =

    /// Runs `body` under a live bar named `description` over `total` units, starting at `start`; `body` moves the
    /// bar with the function it is given (`update value description`; a null description keeps the old one).
    let run (description: string) (total: float) (start: float) (body: (float -> string -> unit) -> 'T) : 'T =
        AnsiConsole
            .Progress()
            .AutoClear(false)
            .Columns(
                [|
                    TaskDescriptionColumn() :> ProgressColumn
                    ProgressBarColumn()
                    PercentageColumn()
                    ElapsedTimeColumn()
                    RemainingTimeColumn()
                |]
            )
            .Start(fun ctx ->
                let bar = ctx.AddTask(description, true, total)
                bar.Value <- start

                body (fun value text ->
                    bar.Value <- value

                    if not (isNull text) then
                        bar.Description <- text))

    /// The trainer's live display: the bar shows the step and running loss; full lines (terms, validation) of
    /// validation steps scroll above it.
    let training =
        { new ITrainingDisplay with
            member _.Show(totalSteps, startStep, body) =
                run "training" (float totalSteps) (float startStep) (fun update ->
                    body (fun row line ->
                        update (float row.Step) (sprintf "step %d/%d  loss %.4f" row.Step totalSteps row.RunningLoss)

                        if row.Validation.Length > 0 then
                            AnsiConsole.WriteLine line))
        }
