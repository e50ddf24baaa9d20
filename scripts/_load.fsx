// The one preamble of every script: the built library and its packages, then the native loader.
// Build first (README, first command): dotnet fsi build.fsx build
#r "../src/Esm3Structure/bin/Release/net10.0/TorchSharp.dll"
#r "../src/Esm3Structure/bin/Release/net10.0/Argu.dll"
#r "../src/Esm3Structure/bin/Release/net10.0/Spectre.Console.dll"
#r "../src/Esm3Structure/bin/Release/net10.0/Esm3Structure.dll"

Esm3Structure.Native.TorchNative.ensureLoaded () |> ignore
