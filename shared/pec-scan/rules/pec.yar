// The provider's YARA rules: engine 2 of the antivirus chain (shared/pec-scan, yara-x).
//
// Each rule runs on one item: a MIME part after transfer decoding, an archive entry after
// decompression, or an archive itself (after its entries). The rule identifier is the
// "signature" of verdicts and notices. The walker sets these external variables per item:
//
//   filename      MIME filename (Content-Disposition filename, else Content-Type name) or the
//                 archive entry's name; "" when none
//   content_type  declared MIME type, lower case, no parameters ("" for archive entries)
//   in_archive    true for entries extracted from an archive
//   depth         container levels above the item
//
// No YARA module is used (the engine is built without them): formats are recognised by their
// magic numbers. In AWS the scan function may load a replacement rule file from S3
// (PEC_YARA_RULES_KEY); this file is the built-in default and the test reference.

rule PEC_EICAR_Test_File
{
    meta:
        description = "EICAR anti-virus test file"
    strings:
        // The 68-byte EICAR string, in hex so that this file is not itself the test virus.
        $eicar = { 58 35 4F 21 50 25 40 41 50 5B 34 5C 50 5A 58 35 34 28 50 5E 29 37 43 43 29 37 7D 24 45 49 43 41 52 2D
                   53 54 41 4E 44 41 52 44 2D 41 4E 54 49 56 49 52 55 53 2D 54 45 53 54 2D 46 49 4C 45 21 24 48 2B 48 2A }
    condition:
        $eicar
}

rule PEC_Executable_In_Archive
{
    meta:
        description = "Windows executable (PE) or script hidden inside an archive"
    condition:
        in_archive and (
            (uint16(0) == 0x5A4D and uint32(uint32(0x3C)) == 0x00004550)
            or filename matches /\.(exe|scr|com|pif|cpl|msi|msc|dll|bat|cmd|js|jse|vbs|vbe|wsf|wsh|ps1|psm1|hta|lnk|jar|reg|iso|img|vhdx?)$/i
        )
}

rule PEC_Double_Extension
{
    meta:
        description = "Executable or script disguised behind a document extension (invoice.pdf.exe)"
    condition:
        filename matches /\.(pdf|docx?|xlsx?|pptx?|odt|ods|odp|rtf|txt|csv|xml|p7m|jpe?g|png|gif|bmp|tiff?|zip|rar|7z|html?|eml)[ \t._-]*\.(exe|scr|com|pif|cpl|msi|bat|cmd|js|jse|vbs|vbe|wsf|wsh|ps1|hta|lnk|jar|reg)$/i
        or filename contains "\xE2\x80\xAE"
}

rule PEC_Office_Macro_OOXML
{
    meta:
        description = "Macro-enabled Office Open XML document (vbaProject.bin)"
    strings:
        $vba = "vbaProject.bin" nocase
    condition:
        (uint32(0) == 0x04034B50 and $vba)
        or (in_archive and filename matches /(^|\/)vbaProject\.bin$/i)
        or filename matches /\.(docm|dotm|xlsm|xltm|xlam|pptm|potm|ppsm|ppam|sldm)$/i
}

rule PEC_Office_Macro_OLE
{
    meta:
        description = "Legacy Office (OLE2) document with a VBA project"
    strings:
        $vba_project = "_VBA_PROJECT" wide
        $vba_dir = "VBA" wide fullword
        $attribute = "Attribute VB_" ascii
    condition:
        uint32(0) == 0xE011CFD0 and uint32(4) == 0xE11AB1A1 and ($vba_project or ($vba_dir and $attribute))
}

rule PEC_HTML_Smuggling
{
    meta:
        description = "HTML that assembles a file in the browser (Blob + object URL or msSaveOrOpenBlob)"
    strings:
        $blob = "new Blob" nocase
        $object_url = "createObjectURL" nocase
        $save = "msSaveOrOpenBlob" nocase
        $atob = "atob(" nocase
        $bytes = "Uint8Array" nocase
        $download1 = ".download" nocase
        $download2 = "download=" nocase
        $click = ".click()" nocase
        $html = "<html" nocase
        $script = "<script" nocase
    condition:
        (content_type contains "html" or filename matches /\.(s?html?|xhtml|svg|hta)$/i or ($html and $script))
        and $blob and ($object_url or $save) and ($atob or $bytes)
        and ($download1 or $download2 or $save or $click)
}
