/* Wine 8 lacks api-ms-win-core-winrt-error-l1-1-0.dll, which the windows crate imports for error
 * reporting to WinRT: returning FALSE says the error was not reported, which is all it needs. */
#include <windows.h>

__declspec(dllexport) BOOL WINAPI RoOriginateErrorW(HRESULT error, UINT length, const WCHAR *message) {
    (void)error;
    (void)length;
    (void)message;
    return FALSE;
}
