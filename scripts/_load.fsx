// The one preamble of every script: the built library, its tools (the app layer) and their packages, then the
// native loader.
// Build first (README, first command): dotnet fsi build.fsx build
#r "../src/Esm3Structure.Tools/bin/Release/net10.0/TorchSharp.dll"
#r "../src/Esm3Structure.Tools/bin/Release/net10.0/Argu.dll"
#r "../src/Esm3Structure.Tools/bin/Release/net10.0/Spectre.Console.dll"
#r "../src/Esm3Structure.Tools/bin/Release/net10.0/Esm3Structure.dll"
#r "../src/Esm3Structure.Tools/bin/Release/net10.0/Esm3Structure.Tools.dll"

Esm3Structure.Native.TorchNative.ensureLoaded () |> ignore
